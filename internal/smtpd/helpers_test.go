package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/testpki"
)

// diskReceiver is a real Receiver: it streams the body into a temporary
// file in dir, fsyncs it, renames it to <mid>.eml and fsyncs the directory
// before returning, and discards the partial file on any read error.
type diskReceiver struct {
	dir      string
	mid      atomic.Uint64
	spaceErr error
	// acceptErr, when set, is returned after the body was read (and the
	// partial file removed): the message is refused.
	acceptErr error
	// gate, when set, is received from after the fsync and before Accept
	// returns, so a test can hold the reply.
	gate   chan struct{}
	stored chan uint64 // optional: signalled after the fsync

	mu   sync.Mutex
	envs map[uint64]*envelope.Envelope
}

func newDiskReceiver(t *testing.T) *diskReceiver {
	return &diskReceiver{dir: t.TempDir(), envs: map[uint64]*envelope.Envelope{}}
}

func (d *diskReceiver) NewMID() uint64    { return d.mid.Add(1) }
func (d *diskReceiver) CheckSpace() error { return d.spaceErr }

func (d *diskReceiver) Accept(ctx context.Context, mid uint64, env *envelope.Envelope, body io.Reader) (int64, error) {
	f, err := os.CreateTemp(d.dir, "tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	fail := func(err error) (int64, error) {
		f.Close()
		os.Remove(tmp)
		return 0, err
	}
	n, err := io.Copy(f, body)
	if err != nil {
		return fail(fmt.Errorf("store body: %w", err))
	}
	if d.acceptErr != nil {
		return fail(d.acceptErr)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return 0, err
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, strconv.FormatUint(mid, 10)+".eml")); err != nil {
		os.Remove(tmp)
		return 0, err
	}
	dir, err := os.Open(d.dir)
	if err != nil {
		return 0, err
	}
	err = dir.Sync()
	dir.Close()
	if err != nil {
		return 0, err
	}
	cp := *env
	d.mu.Lock()
	d.envs[mid] = &cp
	d.mu.Unlock()
	if d.stored != nil {
		d.stored <- mid
	}
	if d.gate != nil {
		<-d.gate
	}
	return n, nil
}

// messages returns the stored message files by MID.
func (d *diskReceiver) messages(t *testing.T) map[uint64]string {
	t.Helper()
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]string{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "tmp-") {
			t.Errorf("partial file left behind: %s", name)
			continue
		}
		mid, err := strconv.ParseUint(strings.TrimSuffix(name, ".eml"), 10, 64)
		if err != nil {
			t.Fatalf("unexpected file %s", name)
		}
		b, err := os.ReadFile(filepath.Join(d.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[mid] = string(b)
	}
	return out
}

func (d *diskReceiver) env(mid uint64) *envelope.Envelope {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.envs[mid]
}

// logBuf collects mail-log lines safely across goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the logged texts without the timestamp and level.
func (l *logBuf) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(strings.TrimRight(l.b.String(), "\n"), "\n") {
		if _, text, ok := strings.Cut(line, " Info: "); ok {
			out = append(out, text)
		}
	}
	return out
}

// waitFor waits until a logged line equals want and returns all lines.
func (l *logBuf) waitFor(t *testing.T, want string) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := l.lines()
		for _, x := range lines {
			if x == want {
				return lines
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("log line %q never appeared; got:\n%s", want, strings.Join(lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type testServer struct {
	srv  *Server
	addr string
	log  *logBuf
	recv *diskReceiver
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// startServer runs a listener on a loopback port with a diskReceiver; edit
// adjusts the config first.
func startServer(t *testing.T, edit func(*Config)) *testServer {
	t.Helper()
	ts := &testServer{log: &logBuf{}, recv: newDiskReceiver(t)}
	cfg := Config{
		Hostname:  "outpost.test",
		Name:      "Main",
		RelayFrom: loopback,
		Log:       maillog.NewWriter(ts.log, maillog.Info),
		Receiver:  ts.recv,
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	ts.srv, ts.addr = srv, l.Addr().String()
	return ts
}

// rawClient speaks SMTP byte for byte.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, conn: c, r: bufio.NewReader(c)}
	rc.expect("220")
	return rc
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one (possibly multi-line) reply and returns it joined by "\n".
func (c *rawClient) reply() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads a reply and fails unless it starts with prefix.
func (c *rawClient) expect(prefix string) string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading reply (want %q): %v (got %q)", prefix, err, r)
	}
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("reply %q, want prefix %q", r, prefix)
	}
	return r
}

// cmd sends a command line and returns the reply.
func (c *rawClient) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("%s: %v", line, err)
	}
	return r
}

// startTx runs EHLO (once), MAIL and RCPT and expects them to succeed.
func (c *rawClient) startTx(from, to string) {
	c.t.Helper()
	for _, l := range []string{"MAIL FROM:<" + from + ">", "RCPT TO:<" + to + ">"} {
		if r := c.cmd(l); !strings.HasPrefix(r, "250") {
			c.t.Fatalf("%s: %s", l, r)
		}
	}
}

func tlsConfigs(t *testing.T) (server, client *tls.Config, caFile string) {
	t.Helper()
	ca, err := testpki.NewCA("Outpost smtpd test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.MustLeaf("outpost.test", "127.0.0.1")
	caFile, err = ca.WriteCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{leaf}},
		&tls.Config{RootCAs: ca.Pool(), ServerName: "outpost.test"}, caFile
}

var errTest = errors.New("test failure")
