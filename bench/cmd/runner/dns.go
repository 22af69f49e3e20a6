package main

import (
	"net"
	"strings"

	"github.com/miekg/dns"
)

// zone is the tiny authoritative zone the benchmark needs:
//
//	bench.test.       MX 10 sink.bench.test.
//	sink.bench.test.  A  127.0.0.1
//
// Everything else under bench.test is NXDOMAIN (so _mta-sts.bench.test has no
// policy and there are no TLSA records); names outside the zone are REFUSED.
const (
	zoneName = "bench.test."
	mxHost   = "sink.bench.test."
)

type dnsServer struct {
	servers []*dns.Server
}

func dnsHandler(w dns.ResponseWriter, req *dns.Msg) {
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
	switch {
	case !dns.IsSubDomain(zoneName, qn):
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
	case qn == zoneName:
		switch q.Qtype {
		case dns.TypeMX, dns.TypeANY:
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: mxHost})
			m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: mxHost, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(127, 0, 0, 1)})
		case dns.TypeSOA:
			m.Answer = append(m.Answer, soa)
		default:
			m.Ns = append(m.Ns, soa)
		}
	case qn == mxHost:
		switch q.Qtype {
		case dns.TypeA, dns.TypeANY:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(127, 0, 0, 1)})
		default: // AAAA, TLSA, ...: NODATA
			m.Ns = append(m.Ns, soa)
		}
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
