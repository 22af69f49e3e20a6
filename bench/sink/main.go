// Command sink is the benchmark's receiving MTA: a minimal, fast SMTP server
// on a loopback address that offers STARTTLS with a certificate for a chosen
// name, issued by a throw-away CA it generates (the CA certificate is written
// to -ca-out so that relays under test can verify the sink for real). It
// accepts every message, counts messages, recipients and body bytes, discards
// the bodies, and serves its counters as JSON on a tiny loopback HTTP
// endpoint (-stats): GET /stats, POST /reset.
//
// It is written to stay out of the way: no per-message logging or allocation
// beyond the connection's pooled buffers, responses are coalesced while the
// client pipelines, and the only shared state is a handful of atomic
// counters.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type counters struct {
	Connections  atomic.Int64
	TLS          atomic.Int64
	TLSResumed   atomic.Int64
	Messages     atomic.Int64
	Recipients   atomic.Int64
	Bytes        atomic.Int64
	Rejected     atomic.Int64 // commands refused (e.g. MAIL before STARTTLS)
	FirstMessage atomic.Int64 // unix nanoseconds of the first message since reset
	LastMessage  atomic.Int64 // unix nanoseconds of the latest message
}

type snapshot struct {
	Connections  int64 `json:"connections"`
	TLS          int64 `json:"tls_handshakes"`
	TLSResumed   int64 `json:"tls_resumed"`
	Messages     int64 `json:"messages"`
	Recipients   int64 `json:"recipients"`
	Bytes        int64 `json:"bytes"`
	Rejected     int64 `json:"rejected"`
	FirstMessage int64 `json:"first_message_unix_nano"`
	LastMessage  int64 `json:"last_message_unix_nano"`
}

func (c *counters) snap() snapshot {
	return snapshot{
		Connections: c.Connections.Load(), TLS: c.TLS.Load(), TLSResumed: c.TLSResumed.Load(),
		Messages: c.Messages.Load(), Recipients: c.Recipients.Load(), Bytes: c.Bytes.Load(),
		Rejected: c.Rejected.Load(), FirstMessage: c.FirstMessage.Load(), LastMessage: c.LastMessage.Load(),
	}
}

func (c *counters) reset() {
	for _, v := range []*atomic.Int64{&c.Connections, &c.TLS, &c.TLSResumed, &c.Messages,
		&c.Recipients, &c.Bytes, &c.Rejected, &c.FirstMessage, &c.LastMessage} {
		v.Store(0)
	}
}

var (
	stats      counters
	name       string
	tlsConf    *tls.Config
	requireTLS bool
	chunking   bool

	// Arrival tracking for the latency benchmark: while on, the Message-ID
	// of every message is recorded with the time its final dot (or BDAT
	// LAST chunk) was read. Off by default: the throughput path only pays
	// one atomic load per message.
	tracking atomic.Bool
	arrMu    sync.Mutex
	arrivals = map[string]int64{}

	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "SMTP listen address (loopback only)")
	statsAddr := flag.String("stats", "127.0.0.1:2526", "HTTP counters address (loopback only)")
	flag.StringVar(&name, "name", "sink.bench.test", "host name in the certificate and greeting")
	altNames := flag.String("alt-names", "bench.test", "further DNS names in the certificate, comma-separated (e.g. the recipient domain, for relays that verify against it)")
	caOut := flag.String("ca-out", "sink-ca.pem", "where to write the test CA certificate (PEM)")
	flag.BoolVar(&requireTLS, "require-tls", true, "refuse MAIL until STARTTLS has been done")
	flag.BoolVar(&chunking, "chunking", true, "advertise CHUNKING (BDAT)")
	flag.Parse()

	for _, a := range []string{*listen, *statsAddr} {
		if err := checkLoopback(a); err != nil {
			log.Fatalf("sink: %v", err)
		}
	}
	caPEM, cert, err := makePKI(name, splitNames(*altNames)...)
	if err != nil {
		log.Fatalf("sink: %v", err)
	}
	if err := os.WriteFile(*caOut, caPEM, 0o644); err != nil {
		log.Fatalf("sink: %v", err)
	}
	tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("sink: %v", err)
	}
	sl, err := net.Listen("tcp", *statsAddr)
	if err != nil {
		log.Fatalf("sink: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(stats.snap())
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		stats.reset()
		w.WriteHeader(http.StatusNoContent)
	})
	// POST /track?on=1 clears the arrival list and starts recording
	// Message-IDs; /track?on=0 stops. GET /arrivals returns {"<id>": unix ns}.
	mux.HandleFunc("/track", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		arrMu.Lock()
		if r.URL.Query().Get("on") == "1" {
			arrivals = map[string]int64{}
			tracking.Store(true)
		} else {
			tracking.Store(false)
		}
		arrMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/arrivals", func(w http.ResponseWriter, r *http.Request) {
		arrMu.Lock()
		b, err := json.Marshal(arrivals)
		arrMu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	go http.Serve(sl, mux)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		b, _ := json.Marshal(stats.snap())
		fmt.Fprintf(os.Stderr, "sink: exiting, counters %s\n", b)
		os.Exit(0)
	}()

	fmt.Fprintf(os.Stderr, "sink: SMTP on %s (name %s), counters on http://%s/stats, CA in %s\n",
		ln.Addr(), name, sl.Addr(), *caOut)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback addresses (127.0.0.0/8, ::1) are allowed", addr)
	}
	return nil
}

func splitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// makePKI makes a CA and a leaf for name and alt (and 127.0.0.1, ::1) signed
// by it.
func makePKI(name string, alt ...string) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "Outpost bench sink CA", Organization: []string{"Outpost bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano() + 1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     append([]string{name}, alt...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, nil
}

type session struct {
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	isTLS  bool
	helo   bool
	mail   bool
	rcpts  int
	bdatN  int64 // bytes of the current BDAT transaction
	bdatOn bool
	msgID  string // Message-ID of the current message (tracking only)
	hdrEnd bool   // the header section of the current BDAT message was seen
}

func serve(c net.Conn) {
	stats.Connections.Add(1)
	r := readers.Get().(*bufio.Reader)
	w := writers.Get().(*bufio.Writer)
	r.Reset(c)
	w.Reset(c)
	s := &session{conn: c, r: r, w: w}
	defer func() {
		c.Close()
		r.Reset(nil)
		w.Reset(nil)
		readers.Put(r)
		writers.Put(w)
	}()
	s.w.WriteString("220 " + name + " ESMTP bench sink\r\n")
	s.w.Flush()
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := s.readLine()
		if err != nil {
			return
		}
		if !s.command(line) {
			s.w.Flush()
			return
		}
		// Coalesce replies while the client has pipelined more commands.
		if s.r.Buffered() == 0 {
			if s.w.Flush() != nil {
				return
			}
		}
	}
}

// readLine returns one command line without CRLF; the slice is valid until
// the next read.
func (s *session) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Absurdly long command: swallow it and answer with an error.
		for err == bufio.ErrBufferFull {
			_, err = s.r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return []byte("X-TOO-LONG"), nil
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// verb upper-cases the command verb in place (the line is ours until the
// next read) and returns it; switching on string(verb(...)) does not allocate.
func verb(line []byte) []byte {
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		i = len(line)
	}
	for j := 0; j < i; j++ {
		if c := line[j]; 'a' <= c && c <= 'z' {
			line[j] = c - ('a' - 'A')
		}
	}
	return line[:i]
}

func (s *session) reply(msg string) { s.w.WriteString(msg) }

func (s *session) resetTxn() {
	s.mail, s.rcpts, s.bdatN, s.bdatOn, s.msgID, s.hdrEnd = false, 0, 0, false, "", false
}

// command handles one line; false ends the session.
func (s *session) command(line []byte) bool {
	switch string(verb(line)) {
	case "EHLO":
		s.helo = true
		s.resetTxn()
		s.reply("250-" + name + "\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n")
		if chunking {
			s.reply("250-CHUNKING\r\n")
		}
		if !s.isTLS {
			s.reply("250-STARTTLS\r\n")
		}
		s.reply("250 SMTPUTF8\r\n")
	case "HELO":
		s.helo = true
		s.resetTxn()
		s.reply("250 " + name + "\r\n")
	case "STARTTLS":
		if s.isTLS {
			s.reply("503 5.5.1 TLS already active\r\n")
			return true
		}
		if s.r.Buffered() > 0 {
			s.reply("501 5.5.1 Pipelining after STARTTLS is not allowed\r\n")
			return true
		}
		s.reply("220 2.0.0 Ready to start TLS\r\n")
		if s.w.Flush() != nil {
			return false
		}
		tc := tls.Server(s.conn, tlsConf)
		tc.SetDeadline(time.Now().Add(30 * time.Second))
		if err := tc.Handshake(); err != nil {
			return false
		}
		tc.SetDeadline(time.Time{})
		stats.TLS.Add(1)
		if tc.ConnectionState().DidResume {
			stats.TLSResumed.Add(1)
		}
		s.conn = tc
		s.r.Reset(tc)
		s.w.Reset(tc)
		s.isTLS, s.helo = true, false
		s.resetTxn()
	case "MAIL":
		switch {
		case requireTLS && !s.isTLS:
			stats.Rejected.Add(1)
			s.reply("530 5.7.0 Must issue a STARTTLS command first\r\n")
		case !s.helo:
			s.reply("503 5.5.1 EHLO first\r\n")
		case s.mail:
			s.reply("503 5.5.1 Nested MAIL command\r\n")
		default:
			s.mail = true
			s.reply("250 2.1.0 Ok\r\n")
		}
	case "RCPT":
		if !s.mail {
			s.reply("503 5.5.1 Need MAIL command\r\n")
			return true
		}
		s.rcpts++
		s.reply("250 2.1.5 Ok\r\n")
	case "DATA":
		if !s.mail || s.rcpts == 0 || s.bdatOn {
			s.reply("503 5.5.1 Need RCPT command\r\n")
			return true
		}
		s.reply("354 End data with <CR><LF>.<CR><LF>\r\n")
		if s.w.Flush() != nil {
			return false
		}
		n, err := s.readData()
		if err != nil {
			return false
		}
		s.delivered(n)
	case "BDAT":
		return s.bdat(line)
	case "RSET":
		s.resetTxn()
		s.reply("250 2.0.0 Ok\r\n")
	case "NOOP":
		s.reply("250 2.0.0 Ok\r\n")
	case "QUIT":
		s.reply("221 2.0.0 Bye\r\n")
		return false
	default:
		s.reply("502 5.5.2 Command not recognized\r\n")
	}
	return true
}

func (s *session) delivered(n int64) {
	stats.Messages.Add(1)
	stats.Recipients.Add(int64(s.rcpts))
	stats.Bytes.Add(n)
	now := time.Now().UnixNano()
	stats.FirstMessage.CompareAndSwap(0, now)
	stats.LastMessage.Store(now)
	if s.msgID != "" && tracking.Load() {
		arrMu.Lock()
		if _, dup := arrivals[s.msgID]; !dup {
			arrivals[s.msgID] = now
		}
		arrMu.Unlock()
	}
	s.resetTxn()
	s.reply("250 2.0.0 Ok: queued\r\n")
}

// readData consumes a dot-terminated body and returns its size in bytes.
func (s *session) readData() (int64, error) {
	var n int64
	atLineStart := true
	inHeader := tracking.Load()
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
	for {
		chunk, err := s.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return n, err
		}
		if atLineStart && len(chunk) >= 3 && chunk[0] == '.' && (string(chunk) == ".\r\n" || string(chunk) == ".\n") {
			return n, nil
		}
		if inHeader && atLineStart {
			if len(bytes.TrimRight(chunk, "\r\n")) == 0 {
				inHeader = false
			} else if id, ok := messageID(chunk); ok {
				s.msgID = id
			}
		}
		n += int64(len(chunk))
		atLineStart = err == nil // a full buffer means we are mid-line
	}
}

func (s *session) bdat(line []byte) bool {
	f := bytes.Fields(line)
	if len(f) < 2 || len(f) > 3 {
		s.reply("501 5.5.4 Syntax: BDAT size [LAST]\r\n")
		return true
	}
	size, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil || size < 0 {
		s.reply("501 5.5.4 Bad chunk size\r\n")
		return true
	}
	last := len(f) == 3 && bytes.EqualFold(f[2], []byte("LAST"))
	// The chunk must be consumed whatever we answer.
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
	if tracking.Load() && !s.hdrEnd && s.mail && size > 0 {
		if b, err := s.r.Peek(int(min(size, int64(s.r.Size())))); err == nil {
			s.scanHeaders(b)
		}
	}
	if _, err := s.r.Discard(int(size)); err != nil {
		return false
	}
	if !s.mail || s.rcpts == 0 {
		s.reply("503 5.5.1 Need RCPT command\r\n")
		return true
	}
	s.bdatOn = true
	s.bdatN += size
	if last {
		s.delivered(s.bdatN)
	} else {
		s.reply("250 2.0.0 Chunk received\r\n")
	}
	return true
}

// messageID returns the value of a "Message-ID:" header line.
func messageID(line []byte) (string, bool) {
	const h = "message-id:"
	if len(line) < len(h) || !bytes.EqualFold(line[:len(h)], []byte(h)) {
		return "", false
	}
	return string(bytes.TrimSpace(line[len(h):])), true
}

// scanHeaders looks for the Message-ID in (the start of) a BDAT message.
func (s *session) scanHeaders(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return // header continues in the next chunk: good enough for a benchmark
		}
		line := b[:i+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			s.hdrEnd = true
			return
		}
		if id, ok := messageID(line); ok {
			s.msgID = id
		}
		b = b[i+1:]
	}
}
