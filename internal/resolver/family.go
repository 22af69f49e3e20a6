package resolver

import (
	"context"
	"net/netip"

	"github.com/miekg/dns"
)

// A looks up the IPv4 addresses of host alone, with this family's own
// outcome (Addrs merges both families, which hides that one of them is
// NODATA or failing). Diagnostic tools (outpost explain) use it to show the
// A and AAAA answers separately.
func (r *Resolver) A(ctx context.Context, host string) ([]netip.Addr, Answer, error) {
	return r.family(ctx, host, dns.TypeA)
}

// AAAA looks up the IPv6 addresses of host alone (see A).
func (r *Resolver) AAAA(ctx context.Context, host string) ([]netip.Addr, Answer, error) {
	return r.family(ctx, host, dns.TypeAAAA)
}

func (r *Resolver) family(ctx context.Context, host string, qtype uint16) ([]netip.Addr, Answer, error) {
	rrs, ans, err := r.lookup(ctx, host, qtype)
	if err != nil || ans.Status != OK {
		return nil, ans, err
	}
	var out []netip.Addr
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
				out = append(out, a)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
				out = append(out, a)
			}
		}
	}
	return out, ans, nil
}
