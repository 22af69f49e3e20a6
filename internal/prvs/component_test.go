package prvs_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost/internal/config"
	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/prvs"
	"outpost/internal/smtpd"
)

// memReceiver keeps accepted envelopes in memory.
type memReceiver struct {
	mu   sync.Mutex
	next uint64
	envs map[uint64]envelope.Envelope
}

func (m *memReceiver) NewMID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	return m.next
}

func (m *memReceiver) CheckSpace() error { return nil }

func (m *memReceiver) Accept(_ context.Context, mid uint64, env *envelope.Envelope, body io.Reader) (int64, error) {
	n, err := io.Copy(io.Discard, body)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.envs[mid] = *env
	return n, nil
}

func (m *memReceiver) recipients(mid uint64) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.envs[mid].Recipients {
		out = append(out, r.Addr)
	}
	return out
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if line != "" {
		if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
			c.t.Fatalf("%s: %v", line, err)
		}
	}
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("%s: reading reply: %v (got %q)", line, err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (c *client) want(line, prefix string) string {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("%s: got %q, want %q...", line, r, prefix)
	}
	return r
}

// TestListener runs the real listener on loopback with the Checker as its
// BounceCheck and speaks SMTP to it.
func TestListener(t *testing.T) {
	now := time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)
	keys, err := prvs.NewKeys([]config.BVKey{{Key: "0123456789abcdef", Added: "2024-01-01"}})
	if err != nil {
		t.Fatal(err)
	}
	checker := &prvs.Checker{Keys: keys, Domains: []string{"example.com"}, Now: func() time.Time { return now }}
	recv := &memReceiver{envs: map[uint64]envelope.Envelope{}}
	logs := &syncBuf{}
	srv, err := smtpd.New(smtpd.Config{
		Hostname:          "outpost.test",
		RelayFrom:         []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Log:               maillog.NewWriter(logs, maillog.Info),
		Receiver:          recv,
		ReverseDNSTimeout: -1,
		BounceCheck:       checker.Check,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.want("", "220")
	c.want("EHLO client.test", "250")

	tagged := keys.Tag("joe@example.com", now)
	forged := tagged[:len("prvs=0799")] + "000000" + tagged[len("prvs=0799f24136"):]
	if forged == tagged {
		t.Fatal("forgery equals the tag")
	}
	// send transmits a message and returns its MID (the last allocated:
	// one client, one transaction at a time).
	send := func() uint64 {
		t.Helper()
		c.want("DATA", "354")
		c.want("Subject: bounce\r\n\r\nbody\r\n.", "250")
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return recv.next
	}
	rejected := func(rcpt string) string {
		return "553 5.7.1 invalid bounce, rcpt address <" + rcpt + "> rejected by bounce verification"
	}

	// A bounce to a tagged address of ours: accepted, stored untagged.
	c.want("MAIL FROM:<>", "250")
	c.want("RCPT TO:<"+tagged+">", "250")
	mid := send()
	if got := recv.recipients(mid); len(got) != 1 || got[0] != "joe@example.com" {
		t.Errorf("valid bounce stored for %q, want [joe@example.com]", got)
	}

	// Untagged and forged: 553, logged in the appliance's words; a valid
	// recipient and one not in our domains in the same bounce still go.
	c.want("MAIL FROM:<>", "250")
	if r := c.cmd("RCPT TO:<joe@example.com>"); r != rejected("joe@example.com") {
		t.Errorf("untagged bounce: %q", r)
	}
	if r := c.cmd("RCPT TO:<" + forged + ">"); r != rejected(forged) {
		t.Errorf("forged bounce: %q", r)
	}
	c.want("RCPT TO:<"+strings.ToUpper(tagged)+">", "250")
	c.want("RCPT TO:<ann@elsewhere.example>", "250")
	if mid = send(); mid != 2 {
		t.Fatalf("MID %d, want 2", mid)
	}
	if got := strings.Join(recv.recipients(mid), " "); got != "JOE@example.com ann@elsewhere.example" {
		t.Errorf("mixed bounce stored for %q", got)
	}
	for _, want := range []string{
		"Info: MID 2 ICID 1 invalid bounce, rcpt address <joe@example.com> rejected by bounce verification.",
		"Info: MID 2 ICID 1 invalid bounce, rcpt address <" + forged + "> rejected by bounce verification.",
		"Info: MID 2 ICID 1 RID 0 To: <JOE@example.com>",
		"Info: MID 2 ICID 1 RID 1 To: <ann@elsewhere.example>",
	} {
		if !strings.Contains(logs.String(), want+"\n") {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// A bounce whose only recipient is refused has nothing to send.
	c.want("MAIL FROM:<>", "250")
	c.want("RCPT TO:<nobody@example.com>", "553 5.7.1")
	c.want("DATA", "502 5.5.1") // go-smtp: no valid recipient
	c.want("RSET", "250")

	// Normal mail is not checked, and a tag on its recipient is kept.
	c.want("MAIL FROM:<alice@example.com>", "250")
	c.want("RCPT TO:<joe@example.com>", "250")
	c.want("RCPT TO:<"+forged+">", "250")
	mid = send()
	if got := strings.Join(recv.recipients(mid), " "); got != "joe@example.com "+forged {
		t.Errorf("normal mail stored for %q", got)
	}
	c.want("QUIT", "221")
}
