package smtpd

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// swaks runs the swaks interop client (Debian package "swaks") against the
// test server. Without swaks the test is skipped, except under CI=true where
// the binary is part of the environment and its absence is a failure.
func swaks(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("swaks")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("swaks not found; CI must install the Debian package swaks")
		}
		t.Skip("swaks not installed (apt-get install swaks); skipping interop test")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"--server", host, "--port", port, "--helo", "client.example",
		"--from", "sender@client.example", "--to", "rcpt@dest.example", "--timeout", "10"}
	out, err := exec.Command(bin, append(base, args...)...).CombinedOutput()
	return string(out), err
}

func TestSwaksPlain(t *testing.T) {
	ts := startServer(t, nil)
	out, err := swaks(t, ts.addr, "--header", "Subject: swaks plain")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs := ts.recv.messages(t)
	if len(msgs) != 1 || !strings.Contains(msgs[1], "Subject: swaks plain\r\n") {
		t.Fatalf("stored %v", msgs)
	}
	ts.log.waitFor(t, "MID 1 Subject 'swaks plain'")
	ts.log.waitFor(t, "MID 1 queued for delivery")
}

func TestSwaksSTARTTLS(t *testing.T) {
	srvTLS, _, caFile := tlsConfigs(t)
	ts := startServer(t, func(c *Config) { c.TLS = srvTLS })
	out, err := swaks(t, ts.addr, "-tls", "--tls-verify", "--tls-ca-path", caFile, "--header", "Subject: swaks tls")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if len(ts.recv.messages(t)) != 1 {
		t.Fatal("message not stored")
	}
	lines := ts.log.waitFor(t, "ICID 1 close")
	if !strings.HasPrefix(lines[2], "ICID 1 TLS success") {
		t.Errorf("no TLS line: %q", lines)
	}
}

// TestSwaksBareLF sends a raw DATA file (no fix-up by swaks) holding a
// "<LF>.<LF>" smuggling attempt: the transaction fails with 550 5.6.11 and
// nothing is stored or executed.
func TestSwaksBareLF(t *testing.T) {
	ts := startServer(t, nil)
	data := filepath.Join(t.TempDir(), "smuggle.eml")
	raw := "Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@client.example>\r\nRCPT TO:<victim@dest.example>\r\nDATA\r\nSubject: hidden\r\n\r\nx\r\n.\r\n"
	if err := os.WriteFile(data, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := swaks(t, ts.addr, "--no-data-fixup", "--data", "@"+data)
	if err == nil {
		t.Fatalf("swaks succeeded:\n%s", out)
	}
	if !strings.Contains(out, "550 5.6.11") {
		t.Errorf("no 550 5.6.11 in transcript:\n%s", out)
	}
	if n := len(ts.recv.messages(t)); n != 0 {
		t.Errorf("%d messages stored", n)
	}
	for _, l := range ts.log.waitFor(t, "ICID 1 close") {
		if strings.Contains(l, "evil@") || strings.Contains(l, "queued") {
			t.Errorf("log line %q", l)
		}
	}
}
