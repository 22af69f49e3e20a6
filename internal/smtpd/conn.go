package smtpd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// listener wraps accepted connections in clientConn.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.newClientConn(c), nil
}

// clientConn is the TCP connection of one client. It sets the read and
// write deadlines before every I/O (idle and total timeouts), owns the
// connection's identity (ICID, relay verdict, reverse DNS) and writes the
// "New SMTP ICID" and "ICID close" lines. go-smtp layers TLS over it after
// STARTTLS, so it keeps working under TLS.
type clientConn struct {
	net.Conn
	s        *Server
	icid     uint64
	remote   netip.Addr
	local    netip.Addr
	relay    bool
	deadline time.Time // end of the session (TotalTimeout)

	ctx    context.Context // cancelled when the connection closes
	cancel context.CancelFunc
	ready  chan struct{} // closed once the connection lines are logged

	tlsLogged atomic.Bool
	closeOnce sync.Once
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (s *Server) newClientConn(c net.Conn) *clientConn {
	cc := &clientConn{
		Conn:     c,
		s:        s,
		icid:     s.cfg.NextICID(),
		remote:   addrOf(c.RemoteAddr()),
		local:    addrOf(c.LocalAddr()),
		deadline: time.Now().Add(s.cfg.TotalTimeout),
		ready:    make(chan struct{}),
	}
	cc.ctx, cc.cancel = context.WithCancel(context.Background())
	match, ok := s.relayMatch(cc.remote)
	cc.relay = ok
	s.track(cc, true)
	// The lookup runs beside the greeting; NewSession and Close wait for it,
	// so the lines stay in order. It is bounded by ReverseDNSTimeout and
	// cancelled by Close.
	go func() {
		defer close(cc.ready)
		host, verified := "", false
		if s.cfg.ReverseDNSTimeout > 0 {
			ctx, cancel := context.WithTimeout(cc.ctx, s.cfg.ReverseDNSTimeout)
			host, verified = reverseDNS(ctx, s.cfg.Resolver, cc.remote)
			cancel()
		}
		s.cfg.Log.NewICID(cc.icid, s.cfg.Name, cc.local.String(), cc.remote.String(), host, verified)
		if ok {
			s.cfg.Log.ICIDPolicy(cc.icid, "RELAY", "RELAYLIST", match.String())
		} else {
			s.cfg.Log.ICIDPolicy(cc.icid, "REJECT", "BLOCKED", "ALL")
		}
	}()
	return cc
}

func (c *clientConn) Read(b []byte) (int, error) {
	d := time.Now().Add(c.s.cfg.ReadTimeout)
	if d.After(c.deadline) {
		d = c.deadline
	}
	if err := c.Conn.SetReadDeadline(d); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *clientConn) Write(b []byte) (int, error) {
	// Not capped by the session deadline, so the 421 that ends an expired
	// session can still be written.
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.s.cfg.ReadTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Close closes the connection and, once, writes "ICID n close" (after the
// connection lines, which it waits for).
func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.ready
		c.s.cfg.Log.ICIDClose(c.icid)
		c.s.track(c, false)
	})
	return err
}

// reverseDNS names ip by PTR and confirms the name forward (the name must
// resolve back to ip), as the gateway's "verified" field means. Loopback
// addresses are "localhost", verified, without a lookup. Failures give
// ("", false): the name is informational and never blocks the session.
func reverseDNS(ctx context.Context, r ReverseResolver, ip netip.Addr) (host string, verified bool) {
	if !ip.IsValid() {
		return "", false
	}
	if ip.IsLoopback() {
		return "localhost", true
	}
	names, err := r.LookupAddr(ctx, ip.String())
	if err != nil || len(names) == 0 {
		return "", false
	}
	host = strings.TrimSuffix(names[0], ".")
	for _, n := range names {
		addrs, err := r.LookupNetIP(ctx, "ip", n)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.Unmap() == ip {
				return strings.TrimSuffix(n, "."), true
			}
		}
	}
	return host, false
}
