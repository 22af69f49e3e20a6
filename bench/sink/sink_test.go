package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"
)

func startTestSink(t testing.TB) (addr string, pool *x509.CertPool) {
	t.Helper()
	name, requireTLS, chunking = "sink.bench.test", true, true
	caPEM, cert, err := makePKI(name)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	stats.reset()
	return ln.Addr().String(), pool
}

func TestSinkCountsVerifiedTLSMessages(t *testing.T) {
	addr, pool := startTestSink(t)
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Plaintext MAIL is refused.
	if err := c.Mail("a@x.test"); err == nil || !strings.Contains(err.Error(), "530") {
		t.Fatalf("MAIL before STARTTLS: %v", err)
	}
	if err := c.StartTLS(&tls.Config{ServerName: "sink.bench.test", RootCAs: pool}); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("0123456789abcdef", 300) + "\r\n.leading dot\r\n" + strings.Repeat("x", 100000) + "\r\n"
	const n = 50
	for i := 0; i < n; i++ {
		if err := c.Mail("a@x.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("b@bench.test"); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(w, body)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	s := stats.snap()
	if s.Messages != n || s.Recipients != n || s.TLS != 1 || s.Rejected != 1 {
		t.Fatalf("counters %+v", s)
	}
	// Dot-stuffing adds one byte to the body's ".leading" line.
	if want := int64(n * (len(body) + 1)); s.Bytes != want {
		t.Fatalf("bytes %d, want %d", s.Bytes, want)
	}
}

func TestSinkBDATAndPipelining(t *testing.T) {
	addr, pool := startTestSink(t)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	r := bufio.NewReader(raw)
	expect := func(r *bufio.Reader, code string) {
		t.Helper()
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(l, code) {
				t.Fatalf("got %q, want %s", l, code)
			}
			if len(l) > 3 && l[3] == ' ' {
				return
			}
		}
	}
	expect(r, "220")
	fmt.Fprint(raw, "EHLO c\r\nSTARTTLS\r\n")
	expect(r, "250")
	expect(r, "220")
	tc := tls.Client(raw, &tls.Config{ServerName: "sink.bench.test", RootCAs: pool})
	tr := bufio.NewReader(tc)
	// One pipelined burst: EHLO, two transactions (DATA and BDAT), QUIT.
	fmt.Fprint(tc, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nBDAT 5\r\nhelloBDAT 3 LAST\r\nabc"+
		"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
	expect(tr, "250") // EHLO
	expect(tr, "250")
	expect(tr, "250")
	expect(tr, "250")
	expect(tr, "250") // chunk
	expect(tr, "250") // LAST
	expect(tr, "250")
	expect(tr, "250")
	expect(tr, "354")
	fmt.Fprint(tc, "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	expect(tr, "250")
	expect(tr, "221")
	s := stats.snap()
	if s.Messages != 2 || s.Recipients != 3 || s.Bytes != int64(8+len("Subject: x\r\n\r\nbody\r\n")) {
		t.Fatalf("counters %+v", s)
	}
}

// BenchmarkSink measures the sink alone: 20 TLS sessions, each sending
// messages back to back over one connection (what a connection-reusing relay
// does). It must be far faster than any relay under test.
func BenchmarkSink4K(b *testing.B) {
	addr, pool := startTestSink(b)
	body := strings.Repeat(strings.Repeat("y", 76)+"\r\n", 4096/78)
	const sessions = 20
	var wg sync.WaitGroup
	per := b.N/sessions + 1
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			if err := c.StartTLS(&tls.Config{ServerName: "sink.bench.test", RootCAs: pool}); err != nil {
				b.Error(err)
				return
			}
			for i := 0; i < per; i++ {
				c.Mail("a@x.test")
				c.Rcpt("b@bench.test")
				w, err := c.Data()
				if err != nil {
					b.Error(err)
					return
				}
				w.Write([]byte(body))
				w.Close()
			}
			c.Quit()
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(sessions*per)/time.Since(start).Seconds(), "msgs/s")
}
