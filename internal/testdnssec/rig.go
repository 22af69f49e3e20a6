// Package testdnssec runs a real DNSSEC test bed on loopback for tests: an
// authoritative server (knotd) serving zones signed with ldns-signzone, and
// a validating recursive resolver (unbound) that trusts the test zones' keys
// and sets the AD bit exactly as it would in production. Nothing in the
// product imports it.
//
// What a test can ask for, per zone:
//   - a signed zone with a trust anchor (answers are "secure": AD=1, and
//     NXDOMAIN/NODATA come with validated NSEC denial);
//   - an unsigned zone (answers are "insecure": AD=0);
//   - a signed zone whose signatures expired (every answer is bogus:
//     unbound returns SERVFAIL);
//   - individual RRsets of a signed zone with a corrupted RRSIG (only those
//     answers are bogus);
//   - names served by a broken authority that answers SERVFAIL to
//     everything (a lookup failure that is not a validation failure).
//
// Everything listens on 127.0.0.1 on ports chosen at start; files live in
// the test's temporary directory; processes are stopped by t.Cleanup.
//
// Tools (Debian packages): knotd (knot), ldns-keygen and ldns-signzone
// (ldnsutils), unbound (unbound). When one is missing, Start fails the test
// under CI=true and skips it elsewhere.
package testdnssec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone describes one test zone.
type Zone struct {
	// Name is the zone apex, e.g. "secure.test" (trailing dot optional).
	Name string
	// Records are resource records in zone-file syntax. Owner names may
	// be relative to Name ("mx 300 IN A 127.0.0.1") or absolute with a
	// trailing dot; "@" is the apex. SOA and NS records are added.
	Records []string
	// Signed signs the zone and gives unbound its DS as a trust anchor.
	// An unsigned zone is declared insecure to unbound (domain-insecure).
	Signed bool
	// Expired signs with signatures whose validity ended a month ago:
	// every answer from the zone is bogus. Implies Signed.
	Expired bool
	// Bogus lists RRsets whose signatures are corrupted after signing, as
	// "owner TYPE" ("_25._tcp.mx TLSA", "mx A"); answers for them are
	// bogus while the rest of the zone stays secure.
	Bogus []string
	// ServFail lists names (relative or absolute) that unbound must ask
	// a broken authority about: every lookup at or below them fails with
	// SERVFAIL. Use it for "the TLSA lookup fails" without a bogus
	// signature ("_25._tcp.mx-down").
	ServFail []string
}

// Rig is a running test bed.
type Rig struct {
	// Resolver is the validating resolver's "127.0.0.1:port": the only
	// address the code under test should be given.
	Resolver string
	// Authoritative is knotd's "127.0.0.1:port" (for tests that want to
	// look at raw, unvalidated answers).
	Authoritative string
	// Anchors are the DS records given to unbound, by zone.
	Anchors map[string]string

	dir string
}

// tools are the binaries the rig needs, with the Debian package of each.
var tools = []struct{ bin, pkg string }{
	{"knotd", "knot"},
	{"ldns-keygen", "ldnsutils"},
	{"ldns-signzone", "ldnsutils"},
	{"unbound", "unbound"},
}

// lookTool finds a binary in PATH or in the sbin directories, where
// Debian puts knotd and unbound (often not in a non-root PATH).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Require fails the test under CI=true, and skips it otherwise, when a
// tool the rig needs is not installed.
func Require(t testing.TB) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, tl := range tools {
		p, err := lookTool(tl.bin)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (Debian package %s); the test command must install it", tl.bin, tl.pkg)
			}
			t.Skipf("%s is not installed (Debian package %s)", tl.bin, tl.pkg)
		}
		paths[tl.bin] = p
	}
	return paths
}

// Start builds, signs and serves zones and starts a validating unbound in
// front of them. It returns when unbound answers for every zone.
func Start(t testing.TB, zones ...Zone) *Rig {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	r := &Rig{dir: dir, Anchors: map[string]string{}}

	// The broken authority for ServFail names: in process, SERVFAIL to
	// every question, UDP and TCP on one port.
	var servfailAddr string
	for _, z := range zones {
		if len(z.ServFail) > 0 {
			servfailAddr = startServFail(t)
			break
		}
	}

	for i := range zones {
		z := &zones[i]
		z.Name = strings.TrimSuffix(strings.ToLower(z.Name), ".")
		if err := r.writeZone(bin, z); err != nil {
			t.Fatalf("testdnssec: zone %s: %v", z.Name, err)
		}
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		knotAddr, err := r.startKnot(t, bin["knotd"], zones)
		if err != nil {
			lastErr = err
			continue
		}
		ubAddr, err := r.startUnbound(t, bin["unbound"], zones, knotAddr, servfailAddr)
		if err != nil {
			lastErr = err
			continue
		}
		r.Authoritative, r.Resolver = knotAddr, ubAddr
		return r
	}
	t.Fatalf("testdnssec: %v", lastErr)
	return nil
}

// fqdn makes name absolute under origin.
func fqdn(name, origin string) string {
	switch {
	case name == "@":
		return origin + "."
	case strings.HasSuffix(name, "."):
		return strings.ToLower(name)
	}
	return strings.ToLower(name) + "." + origin + "."
}

func (r *Rig) writeZone(bin map[string]string, z *Zone) error {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 300\n", z.Name)
	fmt.Fprintf(&b, "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 60\n", z.Name, z.Name)
	fmt.Fprintf(&b, "@ IN NS ns.%s.\nns IN A 127.0.0.1\n", z.Name)
	for _, rr := range z.Records {
		b.WriteString(rr + "\n")
	}
	// A ServFail name is delegated (without DS) to the broken authority,
	// as a real broken subzone would be; otherwise the zone's NSEC chain
	// would prove it does not exist and a validating resolver would
	// answer NXDOMAIN from its cache (aggressive NSEC, RFC 8198).
	for _, n := range z.ServFail {
		fmt.Fprintf(&b, "%s IN NS ns.servfail.invalid.\n", fqdn(n, z.Name))
	}
	unsigned := filepath.Join(r.dir, z.Name+".zone")
	if err := os.WriteFile(unsigned, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if !z.Signed && !z.Expired {
		return nil
	}
	zdir := filepath.Join(r.dir, "keys-"+z.Name)
	if err := os.MkdirAll(zdir, 0o755); err != nil {
		return err
	}
	// One ECDSA P-256 key with the SEP flag, used as a combined signing
	// key: the simplest valid DNSSEC setup.
	out, err := run(zdir, bin["ldns-keygen"], "-a", "ECDSAP256SHA256", "-k", z.Name)
	if err != nil {
		return fmt.Errorf("ldns-keygen: %w", err)
	}
	base := strings.TrimSpace(out)
	ds, err := os.ReadFile(filepath.Join(zdir, base+".ds"))
	if err != nil {
		return err
	}
	r.Anchors[z.Name] = strings.Join(strings.Fields(string(ds)), " ")
	args := []string{"-o", z.Name + ".", "-f", unsigned + ".signed"}
	if z.Expired {
		now := time.Now().UTC()
		args = append(args,
			"-i", now.AddDate(0, -2, 0).Format("20060102150405"),
			"-e", now.AddDate(0, -1, 0).Format("20060102150405"))
	}
	args = append(args, unsigned, filepath.Join(zdir, base))
	if _, err := run(zdir, bin["ldns-signzone"], args...); err != nil {
		return fmt.Errorf("ldns-signzone: %w", err)
	}
	if len(z.Bogus) > 0 {
		if err := corrupt(unsigned+".signed", z.Name, z.Bogus); err != nil {
			return err
		}
	}
	return os.Rename(unsigned+".signed", unsigned)
}

// corrupt flips a bit in the signature of each listed RRset, so that a
// validator finds the RRset bogus (RFC 4035 §5.3).
func corrupt(path, origin string, targets []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, tg := range targets {
		f := strings.Fields(tg)
		if len(f) != 2 {
			return fmt.Errorf("bogus target %q: want \"owner TYPE\"", tg)
		}
		qt, ok := dns.StringToType[strings.ToUpper(f[1])]
		if !ok {
			return fmt.Errorf("bogus target %q: unknown type", tg)
		}
		want[fqdn(f[0], origin)+"/"+strconv.Itoa(int(qt))] = true
	}
	zp := dns.NewZoneParser(bytes.NewReader(data), origin+".", path)
	var out strings.Builder
	hit := map[string]bool{}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if sig, isSig := rr.(*dns.RRSIG); isSig {
			key := strings.ToLower(sig.Hdr.Name) + "/" + strconv.Itoa(int(sig.TypeCovered))
			if want[key] {
				b := []byte(sig.Signature)
				// Swap one base64 digit for another: still valid
				// base64, wrong signature.
				if b[0] == 'A' {
					b[0] = 'B'
				} else {
					b[0] = 'A'
				}
				sig.Signature = string(b)
				hit[key] = true
			}
		}
		out.WriteString(rr.String() + "\n")
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("parse signed zone: %w", err)
	}
	for k := range want {
		if !hit[k] {
			return fmt.Errorf("bogus target %s: no such signed RRset", k)
		}
	}
	return os.WriteFile(path, []byte(out.String()), 0o644)
}

func run(dir, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// freePort finds a port free for both UDP and TCP on 127.0.0.1. Another
// process may take it before the server binds; Start retries.
func freePort() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port on 127.0.0.1")
}

// proc is a started server with its log.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t testing.TB, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p, nil
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (r *Rig) startKnot(t testing.TB, knotd string, zones []Zone) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	run := filepath.Join(r.dir, "knot-run-"+strconv.Itoa(port))
	if err := os.MkdirAll(filepath.Join(run, "db"), 0o755); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n    rundir: %q\n    listen: 127.0.0.1@%d\n", run, port)
	b.WriteString("    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n")
	b.WriteString("log:\n  - target: stderr\n    any: info\n")
	fmt.Fprintf(&b, "database:\n    storage: %q\n", filepath.Join(run, "db"))
	// Serve the zone files as they are: pre-signed (or unsigned), never
	// re-signed or written back.
	fmt.Fprintf(&b, "template:\n  - id: default\n    storage: %q\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n", r.dir)
	b.WriteString("zone:\n")
	for _, z := range zones {
		fmt.Fprintf(&b, "  - domain: %s\n    file: %s.zone\n", z.Name, z.Name)
	}
	conf := filepath.Join(run, "knot.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	p, err := startProc(t, filepath.Join(run, "knotd.log"), knotd, "-c", conf)
	if err != nil {
		return "", err
	}
	for _, z := range zones {
		if err := waitAnswer(p, addr, z.Name, false); err != nil {
			p.stop()
			return "", fmt.Errorf("knotd: %w\n%s", err, p.tail())
		}
	}
	return addr, nil
}

func (r *Rig) startUnbound(t testing.TB, unbound string, zones []Zone, knotAddr, servfailAddr string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	knotHost, knotPort, _ := net.SplitHostPort(knotAddr)
	var b strings.Builder
	b.WriteString("server:\n")
	fmt.Fprintf(&b, "    interface: 127.0.0.1\n    port: %d\n", port)
	fmt.Fprintf(&b, "    directory: %q\n", r.dir)
	b.WriteString(`    do-ip6: no
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    module-config: "validator iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    ede: yes
`)
	for _, z := range zones {
		if ds, ok := r.Anchors[z.Name]; ok {
			fmt.Fprintf(&b, "    trust-anchor: %q\n", ds)
		} else {
			fmt.Fprintf(&b, "    domain-insecure: %q\n", z.Name)
		}
	}
	b.WriteString("remote-control:\n    control-enable: no\n")
	for _, z := range zones {
		fmt.Fprintf(&b, "stub-zone:\n    name: %q\n    stub-addr: %s@%s\n", z.Name, knotHost, knotPort)
		for _, n := range z.ServFail {
			h, p, _ := net.SplitHostPort(servfailAddr)
			fmt.Fprintf(&b, "stub-zone:\n    name: %q\n    stub-addr: %s@%s\n", strings.TrimSuffix(fqdn(n, z.Name), "."), h, p)
		}
	}
	conf := filepath.Join(r.dir, "unbound-"+strconv.Itoa(port)+".conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	p, err := startProc(t, conf+".log", unbound, "-d", "-c", conf)
	if err != nil {
		return "", err
	}
	for _, z := range zones {
		if z.Expired {
			continue // every answer is SERVFAIL by design
		}
		if err := waitAnswer(p, addr, z.Name, true); err != nil {
			p.stop()
			return "", fmt.Errorf("unbound: %w\n%s", err, p.tail())
		}
	}
	return addr, nil
}

// waitAnswer polls server for the SOA of zone until it answers NOERROR,
// the process exits, or 10 seconds pass.
func waitAnswer(p *proc, server, zone string, recursive bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	m.RecursionDesired = recursive
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	for {
		resp, _, err := c.ExchangeContext(ctx, m, server)
		if err == nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) > 0 {
			return nil
		}
		select {
		case <-p.done:
			return errors.New("exited during start-up")
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
			}
			return fmt.Errorf("no answer for %s SOA from %s: %v", zone, server, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startServFail runs the broken authority: SERVFAIL to every question.
func startServFail(t testing.TB) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testdnssec: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			if attempt < 5 {
				continue
			}
			t.Fatalf("testdnssec: %v", err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			if attempt < 5 {
				continue
			}
			t.Fatalf("testdnssec: %v", err)
		}
		udp := &dns.Server{PacketConn: pc, Handler: h}
		tcp := &dns.Server{Listener: l, Handler: h}
		go udp.ActivateAndServe()
		go tcp.ActivateAndServe()
		t.Cleanup(func() {
			udp.Shutdown()
			tcp.Shutdown()
		})
		return addr
	}
}

// Query asks the rig's resolver one question with the DO bit set and
// returns the raw response (tests that check the AD bit or RCODE
// directly).
func (r *Rig) Query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)
	c := &dns.Client{Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, r.Resolver)
	return resp, err
}
