package main

import (
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// zone is the tiny authoritative zone the benchmark needs:
//
//	bench.test.              MX 10 sink.bench.test.     (relay throughput, latency)
//	sink.bench.test.         A  127.0.0.1
//	dN.bench.test.           MX 10 mx.bench.test.       (MTA-STS: N = 1 … stsDomains)
//	_mta-sts.dN.bench.test.  TXT "v=STSv1; id=bench1;"
//	mta-sts.dN.bench.test.   A  127.0.0.1               (the runner's HTTPS policy host)
//	mx.bench.test.           A  127.0.0.1               (the sink; its certificate names it)
//	dead.bench.test.         MX 10 deadmx.bench.test.   (memory: destination down)
//	deadmx.bench.test.       A  127.0.0.2               (nothing listens there: refused)
//
// Everything else under bench.test is NXDOMAIN (so _mta-sts.bench.test has no
// policy and there are no TLSA records), AAAA answers are NODATA, and names
// outside the zone are REFUSED.
const (
	zoneName = "bench.test."
	mxHost   = "sink.bench.test."
	stsMX    = "mx.bench.test."
	deadMX   = "deadmx.bench.test."
	stsID    = "bench1"
)

// stsDomains is how many dN.bench.test domains exist (set before serving).
var stsDomains atomic.Int64

func init() { stsDomains.Store(1000) }

// dnsQueries counts the queries answered (all servers).
var dnsQueries atomic.Int64

type dnsServer struct {
	servers []*dns.Server
}

// stsDomainIndex returns N for "dN.bench.test." (1 ≤ N ≤ stsDomains), else 0.
func stsDomainIndex(name string) int {
	l := strings.TrimSuffix(name, "."+zoneName)
	if l == name || len(l) < 2 || l[0] != 'd' || strings.Contains(l, ".") {
		return 0
	}
	n, err := strconv.Atoi(l[1:])
	if err != nil || n < 1 || int64(n) > stsDomains.Load() || strconv.Itoa(n) != l[1:] {
		return 0
	}
	return n
}

func dnsHandler(w dns.ResponseWriter, req *dns.Msg) {
	dnsQueries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	qn := strings.ToLower(q.Name)
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: zoneName, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns:  "ns.bench.test.", Mbox: "hostmaster.bench.test.",
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 300,
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
	}
	aRR := func(name string, ip net.IP) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: ip}
	}
	lo, dead := net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)
	// host answers A for a host name, NODATA for anything else.
	host := func(ip net.IP) {
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		} else {
			m.Ns = append(m.Ns, soa)
		}
	}
	// mail answers MX for a mail domain, NODATA for anything else.
	mail := func(target string, ip net.IP) {
		if q.Qtype == dns.TypeMX || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: target})
			m.Extra = append(m.Extra, aRR(target, ip))
		} else {
			m.Ns = append(m.Ns, soa)
		}
	}
	switch {
	case !dns.IsSubDomain(zoneName, qn):
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
	case qn == zoneName:
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, soa)
		} else {
			mail(mxHost, lo)
		}
	case qn == mxHost, qn == stsMX:
		host(lo)
	case qn == deadMX:
		host(dead)
	case qn == "dead."+zoneName:
		mail(deadMX, dead)
	case stsDomainIndex(qn) > 0:
		mail(stsMX, lo)
	case strings.HasPrefix(qn, "_mta-sts.") && stsDomainIndex(strings.TrimPrefix(qn, "_mta-sts.")) > 0:
		if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{"v=STSv1; id=" + stsID + ";"}})
		} else {
			m.Ns = append(m.Ns, soa)
		}
	case strings.HasPrefix(qn, "mta-sts.") && stsDomainIndex(strings.TrimPrefix(qn, "mta-sts.")) > 0:
		host(lo)
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	}
	w.WriteMsg(m)
}

// startDNS serves the zone over UDP and TCP on addr (a loopback host:port).
func startDNS(addr string) (*dnsServer, error) {
	d := &dnsServer{}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", dnsHandler)
	for _, netw := range []string{"udp", "tcp"} {
		started := make(chan error, 1)
		s := &dns.Server{Addr: addr, Net: netw, Handler: mux,
			NotifyStartedFunc: func() { started <- nil }}
		go func() {
			if err := s.ListenAndServe(); err != nil {
				select {
				case started <- err:
				default:
				}
			}
		}()
		if err := <-started; err != nil {
			d.stop()
			return nil, err
		}
		d.servers = append(d.servers, s)
	}
	return d, nil
}

func (d *dnsServer) stop() {
	for _, s := range d.servers {
		s.Shutdown()
	}
}
