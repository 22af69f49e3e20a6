package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// smtpConn is a minimal SMTP client connection: enough for an injector that
// pipelines MAIL/RCPT/DATA (both relays offer PIPELINING) and for the
// raw-ceiling client (STARTTLS, BDAT).
type smtpConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialSMTP(ctx context.Context, addr, helo string) (*smtpConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &smtpConn{c: c, r: bufio.NewReaderSize(c, 16<<10), w: bufio.NewWriterSize(c, 32<<10)}
	s.c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := s.expect(220); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := s.ehlo(helo); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func (s *smtpConn) ehlo(helo string) error {
	s.w.WriteString("EHLO " + helo + "\r\n")
	if err := s.w.Flush(); err != nil {
		return err
	}
	_, err := s.expect(250)
	return err
}

// reply reads one (possibly multi-line) reply.
func (s *smtpConn) reply() (int, string, error) {
	var text strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return 0, text.String(), err
		}
		if len(line) < 4 {
			return 0, line, fmt.Errorf("short reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("bad reply %q", line)
		}
		text.WriteString(line)
		if line[3] != '-' {
			return code, text.String(), nil
		}
	}
}

func (s *smtpConn) expect(want int) (string, error) {
	code, text, err := s.reply()
	if err != nil {
		return text, err
	}
	if code != want {
		return text, fmt.Errorf("want %d, got %q", want, strings.TrimSpace(text))
	}
	return text, nil
}

func (s *smtpConn) quit() {
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	s.w.WriteString("QUIT\r\n")
	s.w.Flush()
	s.reply()
	s.c.Close()
}

// send transmits one message with MAIL/RCPT/DATA pipelined and returns when
// the final 250 has been read. body must be dot-stuffed and end in CRLF.
func (s *smtpConn) send(from, to string, body []byte) error {
	s.c.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(s.w, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, to)
	if err := s.w.Flush(); err != nil {
		return err
	}
	for _, want := range []int{250, 250, 354} {
		if txt, err := s.expect(want); err != nil {
			if want == 354 || strings.HasPrefix(txt, "4") || strings.HasPrefix(txt, "5") {
				s.w.WriteString("RSET\r\n")
				s.w.Flush()
			}
			return err
		}
	}
	s.w.Write(body)
	s.w.WriteString(".\r\n")
	if err := s.w.Flush(); err != nil {
		return err
	}
	_, err := s.expect(250)
	return err
}

// makeBody builds a message of about size bytes (header + body), CRLF lines
// of 76 characters, nothing to dot-stuff.
func makeBody(msgID, to string, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <from@client.bench-inject.test>\r\nTo: <%s>\r\nSubject: bench\r\nDate: %s\r\nMessage-ID: %s\r\n\r\n",
		to, time.Now().Format(time.RFC1123Z), msgID)
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd", 1) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// injectPlan is a Go injector run: n messages over sessions parallel
// sessions, each session reused for many messages (reconnecting only after
// an error), recipient rcpt(i) for message i.
type injectPlan struct {
	n, sessions, size int
	rcpt              func(i int) string
	tag               string
}

func (p injectPlan) run(ctx context.Context, addr string) (sent int64, err error) {
	var next, done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < p.sessions; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtpConn
			defer func() {
				if c != nil {
					c.quit()
				}
			}()
			fails := 0
			for {
				i := int(next.Add(1)) - 1
				if i >= p.n || ctx.Err() != nil {
					return
				}
				for {
					if c == nil {
						c, err = dialSMTP(ctx, addr, "client.bench-inject.test")
					}
					if err == nil {
						to := p.rcpt(i)
						err = c.send("from@client.bench-inject.test", to, makeBody(fmt.Sprintf("<%s-%d@bench-inject.test>", p.tag, i), to, p.size))
					}
					if err == nil {
						done.Add(1)
						break
					}
					if c != nil {
						c.c.Close()
						c = nil
					}
					if fails++; fails > 20 || ctx.Err() != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("message %d: %w", i, err)
						}
						mu.Unlock()
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return done.Load(), firstErr
}

// --- the raw ceiling ----------------------------------------------------------

// ceilingRun sends n messages of size bytes to the sink over sessions
// parallel TLS 1.3 sessions (one STARTTLS each, reused for every message),
// MAIL+RCPT+BDAT LAST pipelined in one write: one round trip per message.
// It returns the elapsed time until the last 250.
func ceilingRun(ctx context.Context, addr string, roots *x509.CertPool, n, sessions, size int) (time.Duration, error) {
	body := makeBody("<ceiling@bench-inject.test>", "rcpt@bench.test", size)
	var next atomic.Int64
	errs := make(chan error, sessions)
	conns := make([]*smtpConn, sessions)
	// Sessions are set up before the clock starts (connection reuse is the
	// point: set-up is amortised to nothing).
	for i := range conns {
		c, err := dialSMTP(ctx, addr, "ceiling.bench-inject.test")
		if err != nil {
			return 0, err
		}
		c.w.WriteString("STARTTLS\r\n")
		c.w.Flush()
		if _, err := c.expect(220); err != nil {
			return 0, err
		}
		tc := tls.Client(c.c, &tls.Config{ServerName: "sink.bench.test", RootCAs: roots, MinVersion: tls.VersionTLS13})
		if err := tc.HandshakeContext(ctx); err != nil {
			return 0, err
		}
		c.c, c.r, c.w = tc, bufio.NewReaderSize(tc, 16<<10), bufio.NewWriterSize(tc, 32<<10)
		if err := c.ehlo("ceiling.bench-inject.test"); err != nil {
			return 0, err
		}
		conns[i] = c
	}
	t0 := time.Now()
	for _, c := range conns {
		go func(c *smtpConn) {
			for {
				if int(next.Add(1)) > n || ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
				c.c.SetDeadline(time.Now().Add(time.Minute))
				fmt.Fprintf(c.w, "MAIL FROM:<from@ceiling.bench-inject.test>\r\nRCPT TO:<rcpt@bench.test>\r\nBDAT %d LAST\r\n", len(body))
				c.w.Write(body)
				if err := c.w.Flush(); err != nil {
					errs <- err
					return
				}
				for k := 0; k < 3; k++ {
					if _, err := c.expect(250); err != nil {
						errs <- err
						return
					}
				}
			}
		}(c)
	}
	var err error
	for range conns {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	el := time.Since(t0)
	for _, c := range conns {
		c.quit()
	}
	if err == nil && ctx.Err() != nil {
		err = errors.New("timeout")
	}
	return el, err
}
