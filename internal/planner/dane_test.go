package planner

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/dane"
	"outpost/internal/deliver"
	"outpost/internal/maillog"
	"outpost/internal/resolver"
	"outpost/internal/testdnssec"
	"outpost/internal/testpki"
	"outpost/internal/tlspolicy"
)

type sink struct{ n atomic.Int64 }

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return sess{s}, nil }

type sess struct{ s *sink }

func (sess) Reset()                               {}
func (sess) Logout() error                        { return nil }
func (sess) Mail(string, *smtp.MailOptions) error { return nil }
func (sess) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x sess) Data(r io.Reader) error             { io.Copy(io.Discard, r); x.s.n.Add(1); return nil }
func startSink(t *testing.T, cert tls.Certificate) (*sink, int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	srv := smtp.NewServer(s)
	srv.Domain = "mx.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s, l.Addr().(*net.TCPAddr).Port
}

type stsStub struct{ pol *tlspolicy.STS }

func (s stsStub) Lookup(context.Context, string) (tlspolicy.STSState, *tlspolicy.STS) {
	if s.pol == nil {
		return tlspolicy.STSNoPolicy, nil
	}
	return tlspolicy.STSPolicy, s.pol
}

// TestDANEEndToEnd plans and delivers through a real validating resolver
// (testdnssec: knotd + unbound on loopback) to a real TLS receiver: the
// plan's DANE requirement, the delivery's authentication, and the log
// lines, for each DANE setting against secure, insecure and bogus zones,
// with MTA-STS and routes.
func TestDANEEndToEnd(t *testing.T) {
	ca, _ := testpki.NewCA("e2e CA")
	cert := ca.MustLeaf("mx.secure.test")
	other := ca.MustLeaf("mx.secure.test")
	good := dane.Record(cert.Leaf, dane.DANEEE, dane.SelectorSPKI, dane.MatchSHA256).Text()
	wrong := dane.Record(other.Leaf, dane.DANEEE, dane.SelectorSPKI, dane.MatchSHA256).Text()
	rig := testdnssec.Start(t,
		testdnssec.Zone{Name: "secure.test", Signed: true, Records: []string{
			"@ IN MX 10 mx", "mx IN A 127.0.0.1", "_25._tcp.mx IN TLSA " + good,
			"wrong IN MX 10 mx.wrong", "mx.wrong IN A 127.0.0.1", "_25._tcp.mx.wrong IN TLSA " + wrong,
			"bogus IN MX 10 mx.bogus", "mx.bogus IN A 127.0.0.1", "_25._tcp.mx.bogus IN TLSA " + good,
		}, Bogus: []string{"_25._tcp.mx.bogus TLSA"}},
		testdnssec.Zone{Name: "insecure.test", Records: []string{"@ IN MX 10 mx", "mx IN A 127.0.0.1", "_25._tcp.mx IN TLSA " + good}},
	)
	res := resolver.New([]string{rig.Resolver}, resolver.WithTimeout(3*time.Second))
	snk, port := startSink(t, cert)
	enforce := &tlspolicy.STS{Mode: "enforce", Match: func(h string) bool { return strings.HasSuffix(h, ".test") }}

	for _, tc := range []struct {
		name      string
		domain    string
		set       dane.Setting
		sts       *tlspolicy.STS
		route     bool
		source    tlspolicy.Source
		deferCode string
		deliver   bool   // a connection is made and must succeed
		lines     string // expected in the mail log
	}{
		{"opportunistic, 3 1 1 match", "secure.test", dane.Opportunistic, nil, false, tlspolicy.SourceDANE, "", true,
			"SECURE TLSA record found for MX(mx.secure.test) in secure.test (3 1 1)|DANE SUCCESS for secure.test: TLSA 3 1 1 matched MX(mx.secure.test)"},
		{"DANE precedes MTA-STS", "secure.test", dane.Opportunistic, enforce, false, tlspolicy.SourceDANE, "", true, "DANE SUCCESS for secure.test"},
		{"mismatch: no delivery", "wrong.secure.test", dane.Mandatory, nil, false, tlspolicy.SourceDANE, "", false,
			"DANE failure for wrong.secure.test: MX(mx.wrong.secure.test) no TLSA record matched the server certificate chain (3 1 1)"},
		{"bogus TLSA defers 4.7.5", "bogus.secure.test", dane.Opportunistic, nil, false, tlspolicy.SourceDANE, "4.7.5", false,
			"DANE: skipping MX(mx.bogus.secure.test) in bogus.secure.test: TLSA lookup failed: bogus (SERVFAIL)|DANE deferred delivery for bogus.secure.test: 4.7.5"},
		{"insecure zone, opportunistic: MTA-STS", "insecure.test", dane.Opportunistic, enforce, false, tlspolicy.SourceMTASTS, "", false,
			"DANE not applicable for MX(mx.insecure.test) in insecure.test: the MX records are not DNSSEC-signed"},
		{"insecure zone, opportunistic: TLS mode", "insecure.test", dane.Opportunistic, nil, false, tlspolicy.SourceProfile, "", false, "DANE not applicable"},
		{"insecure zone, mandatory: defer 4.7.4", "insecure.test", dane.Mandatory, nil, false, tlspolicy.SourceDANE, "4.7.4", false,
			"DANE deferred delivery for insecure.test: 4.7.4 DANE is mandatory but the MX records are not DNSSEC-signed"},
		{"route switches DANE off", "secure.test", dane.Mandatory, nil, true, tlspolicy.SourceRoute, "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := maillog.NewWriter(&buf, maillog.Info)
			pl := &Planner{DNS: res, DANEDNS: res, STS: stsStub{tc.sts}, Log: log,
				Profile: func(string) Profile {
					return Profile{TLS: tlspolicy.Preferred, MTASTS: tc.sts != nil, DANE: tc.set}
				}}
			if tc.route {
				pl.Route = func(string) *Route {
					return &Route{Name: tc.domain, Hosts: []tlspolicy.RouteHost{{Host: "127.0.0.1", Port: port}}}
				}
			}
			plan, rerr := pl.Plan(context.Background(), tc.domain)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if plan.Source != tc.source || plan.DeferCode != tc.deferCode {
				t.Fatalf("plan %s defer %q %q; want %s %q (%+v)", plan.Source, plan.DeferCode, plan.DeferText, tc.source, tc.deferCode, plan)
			}
			if tc.source == tlspolicy.SourceDANE && tc.deferCode == "" {
				c := deliver.New(deliver.Options{Hostname: "outpost.test", Port: port, Resolver: res, Log: log})
				before := snk.n.Load()
				cn, err := c.Connect(context.Background(), tc.domain, plan.Hosts[0])
				if tc.deliver != (err == nil) {
					t.Fatalf("connect: %v (want success %v)", err, tc.deliver)
				}
				if err == nil {
					r := cn.Send(context.Background(), &deliver.Message{MID: 1, From: "a@corp.test", Size: 10,
						Rcpts: []deliver.Rcpt{{Addr: "b@" + tc.domain}},
						Body:  func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("Subject: x\r\n\r\nx\r\n")), nil }})
					cn.Close()
					if r.Rcpt[0].Code != 250 || snk.n.Load() != before+1 {
						t.Fatalf("send: %+v", r.Rcpt[0])
					}
				} else if snk.n.Load() != before {
					t.Fatal("mail delivered after a DANE failure")
				}
			}
			log.Close()
			for _, want := range strings.Split(tc.lines, "|") {
				if want != "" && !strings.Contains(buf.String(), want) {
					t.Errorf("mail log lacks %q:\n%s", want, buf.String())
				}
			}
		})
	}
}
