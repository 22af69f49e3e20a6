package mtasts

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	smtp "github.com/emersion/go-smtp"
)

type nopBackend struct{}

func (nopBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return nopSession{}, nil }

type nopSession struct{}

func (nopSession) Reset()        {}
func (nopSession) Logout() error { return nil }
func (nopSession) Mail(string, *smtp.MailOptions) error {
	return errors.New("probe only")
}
func (nopSession) Rcpt(string, *smtp.RcptOptions) error { return errors.New("probe only") }
func (nopSession) Data(io.Reader) error                 { return errors.New("probe only") }

// startMX runs a real go-smtp server on 127.0.0.1; tlsConf nil means no
// STARTTLS.
func startMX(t *testing.T, name string, tlsConf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(nopBackend{})
	s.Domain = name
	s.TLSConfig = tlsConf
	s.ReadTimeout, s.WriteTimeout = 5*time.Second, 5*time.Second
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

type checkWorld struct {
	dns    *dnsServer
	routes map[string]string
	opts   CheckOptions
}

func newCheckWorld(t *testing.T, policy string) *checkWorld {
	w := &checkWorld{dns: newDNSServer(t), routes: map[string]string{}}
	host := newPolicyHost(t, ca(t).MustLeaf("mta-sts."+testDomain), serveText(policy))
	w.routes["mta-sts."+testDomain+":443"] = host.Addr()
	w.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=c1;")
	w.opts = CheckOptions{Resolver: dnsResolver{w.dns.Addr}, Roots: ca(t).Pool(), Timeout: 5 * time.Second,
		DialContext: loopbackDial(w.routes), HeloName: "outpost.test"}
	return w
}

func (w *checkWorld) addMX(t *testing.T, name string, pref uint16, tlsConf *tls.Config) {
	w.routes[name+":25"] = startMX(t, name, tlsConf)
	w.dns.mu.Lock()
	w.dns.mx["example.test."] = append(w.dns.mx["example.test."], &net.MX{Host: name + ".", Pref: pref})
	w.dns.mu.Unlock()
}

func verdictOf(r *Report, host string) MXCheck {
	for _, m := range r.MX {
		if m.Host == host {
			return m
		}
	}
	return MXCheck{}
}

func TestCheckGood(t *testing.T) {
	w := newCheckWorld(t, goodPolicy)
	w.addMX(t, "mx1.example.test", 10, &tls.Config{Certificates: []tls.Certificate{ca(t).MustLeaf("mx1.example.test")}})
	r := Check(context.Background(), testDomain, w.opts)
	if !r.WouldDeliver() {
		var b bytes.Buffer
		r.WriteText(&b)
		t.Fatalf("WouldDeliver false:\n%s", b.String())
	}
	m := verdictOf(r, "mx1.example.test")
	if !m.Matches || !m.STARTTLS || !m.CertValid || m.TLSVersion != "TLS 1.3" || m.Verdict != OK {
		t.Fatalf("mx = %+v", m)
	}
	if r.TXT.ID != "c1" || r.Certificate == nil || !r.Certificate.ChainValid || !r.Certificate.NameValid || r.Certificate.DaysLeft < 300 {
		t.Fatalf("txt %+v cert %+v", r.TXT, r.Certificate)
	}
	if r.Fetch.Status != 200 || !strings.HasPrefix(r.Fetch.ContentType, "text/plain") || r.Fetch.Size != len(goodPolicy) {
		t.Fatalf("fetch %+v", r.Fetch)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "WOULD deliver") {
		t.Fatalf("text:\n%s", b.String())
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	json.Unmarshal(js, &back)
	if back["would_deliver"] != true || back["policy"].(map[string]any)["mode"] != "enforce" {
		t.Fatalf("json: %s", js)
	}
}

func TestCheckBadMX(t *testing.T) {
	w := newCheckWorld(t, goodPolicy)
	// mx1 matches the policy but presents a certificate for another name;
	// a.mx matches and offers no STARTTLS; other.test is not in the policy;
	// old.mx speaks only TLS 1.1.
	w.addMX(t, "mx1.example.test", 10, &tls.Config{Certificates: []tls.Certificate{ca(t).MustLeaf("wrong.example.test")}})
	w.addMX(t, "a.mx.example.test", 20, nil)
	w.addMX(t, "mail.other.test", 30, &tls.Config{Certificates: []tls.Certificate{ca(t).MustLeaf("mail.other.test")}})
	w.addMX(t, "old.mx.example.test", 40, &tls.Config{Certificates: []tls.Certificate{ca(t).MustLeaf("old.mx.example.test")},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	r := Check(context.Background(), testDomain, w.opts)
	var b bytes.Buffer
	r.WriteText(&b)
	text := b.String()
	if r.WouldDeliver() {
		t.Fatalf("WouldDeliver true:\n%s", text)
	}
	if m := verdictOf(r, "mx1.example.test"); m.Verdict != Fail || m.CertValid || !m.STARTTLS {
		t.Fatalf("wrong-name mx = %+v", m)
	}
	if m := verdictOf(r, "a.mx.example.test"); m.Verdict != Fail || m.STARTTLS {
		t.Fatalf("no-STARTTLS mx = %+v", m)
	}
	if m := verdictOf(r, "mail.other.test"); m.Verdict != Fail || m.Matches {
		t.Fatalf("unlisted mx = %+v", m)
	}
	if m := verdictOf(r, "old.mx.example.test"); m.Verdict != Fail || m.TLSVersion != "TLS 1.1" {
		t.Fatalf("TLS 1.1 mx = %+v", m)
	}
	for _, want := range []string{"not listed in the policy", "does not offer STARTTLS", "certificate not valid", "requires TLS 1.2", "No MX host passes"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}

func TestCheckNoRecordAndBadPolicyHost(t *testing.T) {
	w := newCheckWorld(t, "version: STSV1\nmode: enforce\nmx: *.mail123.example.test\nmax_age: 604800\n")
	w.dns.SetTXT("_mta-sts."+testDomain, "v=STSV1; id=12345678598Z;")
	w.addMX(t, "mx1.example.test", 10, &tls.Config{Certificates: []tls.Certificate{ca(t).MustLeaf("mx1.example.test")}})
	r := Check(context.Background(), testDomain, w.opts)
	if r.WouldDeliver() {
		t.Fatal("WouldDeliver true")
	}
	var b bytes.Buffer
	r.WriteText(&b)
	for _, want := range []string{"case-sensitive", "version: STSv1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	// No TXT at all.
	w.dns.mu.Lock()
	delete(w.dns.txt, "_mta-sts.example.test.")
	w.dns.mu.Unlock()
	r = Check(context.Background(), testDomain, w.opts)
	if r.WouldDeliver() || r.Findings[0].Verdict != Fail || !strings.Contains(r.Findings[0].Message, "does not publish MTA-STS") {
		t.Fatalf("findings %+v", r.Findings)
	}
}
