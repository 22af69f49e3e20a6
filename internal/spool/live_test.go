package spool

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// checkLive compares the index with a model and checks its invariants.
func checkLive(t *testing.T, l *liveSet, model map[uint64]int, step int) {
	t.Helper()
	if !slices.IsSorted(l.mids) || len(l.mids) != len(l.nrcpt) {
		t.Fatalf("step %d: index out of order or misaligned", step)
	}
	for i := 1; i < len(l.mids); i++ {
		if l.mids[i] == l.mids[i-1] {
			t.Fatalf("step %d: MID %d twice", step, l.mids[i])
		}
	}
	dead := 0
	for _, c := range l.nrcpt {
		if c == tombstone {
			dead++
		}
	}
	if dead != l.dead || l.len() != len(model) {
		t.Fatalf("step %d: %d tombstones (counted %d), %d live, model %d", step, dead, l.dead, l.len(), len(model))
	}
	if len(l.mids) > 0 && l.nrcpt[len(l.mids)-1] == tombstone {
		t.Fatalf("step %d: tombstone at the end", step)
	}
	if l.dead > max(len(l.mids)/8, minSqueeze) {
		t.Fatalf("step %d: %d tombstones in %d slots", step, l.dead, len(l.mids))
	}
	var got []uint64
	l.each(func(mid uint64, n int) {
		got = append(got, mid)
		if model[mid] != n {
			t.Fatalf("step %d: MID %d has %d recipients, want %d", step, mid, n, model[mid])
		}
	})
	if len(got) != len(model) {
		t.Fatalf("step %d: each gave %d messages, model has %d", step, len(got), len(model))
	}
}

// The index against a map, under the queue's access pattern (MIDs mostly
// increasing, some late, removals of old, new and random messages) and
// some unusual ones (re-adding a MID, removing twice, huge counts).
func TestLiveSetModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var l liveSet
	model := map[uint64]int{}
	next := uint64(1)
	anyLive := func() (uint64, bool) {
		if len(model) == 0 {
			return 0, false
		}
		live := make([]uint64, 0, len(model))
		l.each(func(mid uint64, _ int) { live = append(live, mid) })
		switch r.IntN(3) {
		case 0:
			return live[0], true
		case 1:
			return live[len(live)-1], true
		}
		return live[r.IntN(len(live))], true
	}
	for step := range 20000 {
		switch op := r.IntN(10); {
		case op < 4 || (step > 10000 && op < 5): // grow, then drain
			mid := next
			if r.IntN(5) == 0 && next > 20 {
				mid = next - uint64(r.IntN(20)) // a late Accept, or a re-add
			} else {
				next++
			}
			n := 1 + r.IntN(4)
			l.put(mid, n)
			model[mid] = n
		case op < 9:
			if mid, ok := anyLive(); ok {
				if !l.remove(mid) {
					t.Fatalf("step %d: remove(%d) of a live MID reported false", step, mid)
				}
				delete(model, mid)
			}
		default:
			mid := uint64(r.IntN(int(next) + 5))
			_, live := model[mid]
			if n, ok := l.get(mid); ok != live || n != model[mid] {
				t.Fatalf("step %d: get(%d) = %d, %v; model %d, %v", step, mid, n, ok, model[mid], live)
			}
			if l.remove(mid) != live {
				t.Fatalf("step %d: remove(%d) disagrees with the model (%v)", step, mid, live)
			}
			delete(model, mid)
		}
		checkLive(t, &l, model, step)
	}
	l.put(7, 1<<40)
	if n, _ := l.get(7); n != maxCountedRcpt {
		t.Fatalf("huge recipient count stored as %d", n)
	}
}

// A drained queue gives its index memory back.
func TestLiveSetShrinks(t *testing.T) {
	var l liveSet
	for mid := range uint64(100000) {
		l.put(mid, 1)
	}
	for mid := range uint64(99990) {
		l.remove(mid)
	}
	if l.len() != 10 || cap(l.mids) > 1000 {
		t.Fatalf("%d live, capacity still %d", l.len(), cap(l.mids))
	}
}

// heapBytes returns the live heap growth caused by build (whose result is
// kept alive until measured).
func heapBytes(build func() any) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(x)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// liveFootprint measures the bytes per queued message of the in-memory
// index, for n single-recipient messages with increasing MIDs: the former
// map[uint64][]State, a plain set for comparison, and the liveSet (also
// after churn: the oldest half delivered and as many new ones received,
// which leaves tombstones and growth slack).
func liveFootprint(n int) map[string]float64 {
	per := func(b int64) float64 { return float64(b) / float64(n) }
	out := map[string]float64{}
	out["old-map-B/msg"] = per(heapBytes(func() any {
		m := map[uint64][]State{}
		for mid := range uint64(n) {
			m[mid] = make([]State, 1)
		}
		return m
	}))
	out["set-map-B/msg"] = per(heapBytes(func() any {
		m := map[uint64]struct{}{}
		for mid := range uint64(n) {
			m[mid] = struct{}{}
		}
		return m
	}))
	out["live-B/msg"] = per(heapBytes(func() any {
		l := &liveSet{}
		for mid := range uint64(n) {
			l.put(mid, 1)
		}
		return l
	}))
	out["live-churned-B/msg"] = per(heapBytes(func() any {
		l := &liveSet{}
		for mid := range uint64(n) {
			l.put(mid, 1)
		}
		for mid := range uint64(n / 2) {
			l.remove(mid)
			l.put(uint64(n)+mid, 1)
		}
		return l
	}))
	return out
}

// TestLiveFootprint reports (go test -v) the per-message memory of the
// index for 100 000 queued messages and keeps it within 16 bytes.
func TestLiveFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a few MB")
	}
	f := liveFootprint(100000)
	t.Logf("100000 queued messages, bytes per message: old map[uint64][]State %.1f; map[uint64]struct{} %.1f; liveSet %.1f, after churn %.1f",
		f["old-map-B/msg"], f["set-map-B/msg"], f["live-B/msg"], f["live-churned-B/msg"])
	if f["live-B/msg"] > 16 || f["live-churned-B/msg"] > 16 {
		t.Errorf("liveSet costs %.1f / %.1f bytes per message, want at most 16", f["live-B/msg"], f["live-churned-B/msg"])
	}
}

// BenchmarkLiveSet measures an insert and a removal in a 100 000-message
// index (the queue's pattern: new MIDs at the end, oldest removed first)
// and reports the index's bytes per message beside the former map's.
func BenchmarkLiveSet(b *testing.B) {
	const n = 100000
	footprint := liveFootprint(n)
	var l liveSet
	for mid := range uint64(n) {
		l.put(mid, 1)
	}
	b.ResetTimer()
	for i := range uint64(b.N) {
		l.put(n+i, 1)
		l.remove(i)
	}
	b.StopTimer()
	for k, v := range footprint {
		b.ReportMetric(v, k) // after ResetTimer, which drops reported metrics
	}
}
