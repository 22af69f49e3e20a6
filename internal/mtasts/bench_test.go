package mtasts

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkGetWarm is the per-message decision with the policy in memory.
func BenchmarkGetWarm(b *testing.B) {
	m, now := warmManager(b)
	_ = now
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := m.Get(ctx, "example.test")
		if err != nil || res.Mode != ModeEnforce {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkGetWarmParallel is the same decision from all cores at once.
func BenchmarkGetWarmParallel(b *testing.B) {
	m, _ := warmManager(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, _ := m.Get(ctx, "example.test"); res.Mode != ModeEnforce {
				b.Fatal(res)
			}
		}
	})
}

func warmManager(b *testing.B) (*Manager, time.Time) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewMemStore()
	p, _ := ParsePolicy(goodPolicy)
	s.Put(context.Background(), &Entry{Domain: "example.test", ID: "a", Raw: goodPolicy, Policy: p, FetchedAt: now, Expires: now.Add(24 * time.Hour)})
	m, err := New(context.Background(), Options{Resolver: dnsResolver{}, Store: s, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	// Mark the TXT record as just checked, as after a first message.
	m.mu.Lock()
	m.mem["example.test"].checkedAt = now
	m.mu.Unlock()
	b.Cleanup(m.Close)
	return m, now
}

// BenchmarkColdFetch is a full discovery over loopback: TXT lookup on a
// real DNS server and an HTTPS fetch with a fresh TLS handshake.
func BenchmarkColdFetch(b *testing.B) {
	dns := newDNSServer(b)
	dns.SetTXT("_mta-sts.example.test", "v=STSv1; id=b1;")
	host := newPolicyHost(b, ca(b).MustLeaf("mta-sts.example.test"), serveText(goodPolicy))
	m, err := New(context.Background(), Options{
		Resolver:    dnsResolver{dns.Addr},
		Roots:       ca(b).Pool(),
		DialContext: loopbackDial(map[string]string{"mta-sts.example.test:443": host.Addr()}),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res, err := m.Refresh(context.Background(), "example.test"); err != nil || res.Source != SourceFetch {
			b.Fatal(res, err)
		}
	}
}

// genStore hands out freshly built entries so that everything measured
// after New belongs to the Manager.
type genStore struct {
	MemStore
	n   int
	now time.Time
}

func (g *genStore) List(context.Context) ([]*Entry, error) {
	out := make([]*Entry, g.n)
	for i := range out {
		d := fmt.Sprintf("domain%06d.example", i)
		raw := fmt.Sprintf("version: STSv1\nmode: enforce\nmx: mx1.%s\nmx: *.mx.%s\nmax_age: 604800\n", d, d)
		p, err := ParsePolicy(raw)
		if err != nil {
			return nil, err
		}
		out[i] = &Entry{Domain: d, ID: "20260101T000000", Raw: raw, Policy: p, FetchedAt: g.now, Expires: g.now.Add(7 * 24 * time.Hour)}
	}
	return out, nil
}

// BenchmarkMemory100k reports the resident cost of 100 000 cached
// policies (two mx patterns each, about 110-byte policy text).
func BenchmarkMemory100k(b *testing.B) {
	const n = 100_000
	now := time.Now()
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m, err := New(context.Background(), Options{Resolver: dnsResolver{}, Store: &genStore{MemStore: *NewMemStore(), n: n, now: now}, Now: func() time.Time { return now }})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(m.List()) != n {
			b.Fatal("not loaded")
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/policy")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-total")
		runtime.KeepAlive(m)
	}
}
