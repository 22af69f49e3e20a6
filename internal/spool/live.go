package spool

import (
	"math"
	"slices"
)

// liveSet is the in-memory index of the messages under msg/ that the spool
// knows (accepted since start-up, or returned by Recover): MID → number of
// recipients. It is what List, Mark, Load and journal compaction consult.
//
// It is built for a large, mostly idle queue. A map[uint64][]State costs
// about 53 bytes per single-recipient message, most of them spent on
// messages whose recipients are all pending, and its slice headers are
// pointers the GC has to scan. Here a message costs 12 bytes (plus growth
// slack and tombstones, bounded below) in two pointer-free parallel slices
// sorted by MID; per-recipient states live elsewhere, only for the
// messages that have one (see Spool.states).
//
// MIDs come from a counter, so inserts land at or near the end (an Accept
// that finishes late is a few places from the end): an append or a short
// move. A removal leaves a tombstone, so removing the oldest message does
// not move the whole index; tombstones at the end are popped at once, and
// the rest are squeezed out when they pass an eighth of the slots, or a
// thirty-second when the slices are full and would otherwise grow. That
// keeps removal and insertion amortised O(log n), and the waste bounded:
// a 100 000-message queue costs about 13 bytes a message, measured by
// TestLiveFootprint. Lookups are binary searches.
//
// liveSet is not safe for concurrent use: the Spool guards it with jmu.
type liveSet struct {
	mids  []uint64 // ascending, including tombstoned entries
	nrcpt []uint32 // parallel to mids; tombstone marks a removed entry
	dead  int      // tombstones in mids
}

// tombstone marks a removed entry. It is not a recipient count: a message
// with that many recipients could not have been received.
const tombstone = math.MaxUint32

// maxCountedRcpt is the largest recipient count the index holds; counts
// are clamped to it so that none can be taken for a tombstone.
const maxCountedRcpt = math.MaxUint32 - 1

// minSqueeze is the index size below which tombstones are left alone.
const minSqueeze = 64

// len returns the number of live messages.
func (l *liveSet) len() int { return len(l.mids) - l.dead }

// get returns a live message's recipient count.
func (l *liveSet) get(mid uint64) (n int, ok bool) {
	i, found := slices.BinarySearch(l.mids, mid)
	if !found || l.nrcpt[i] == tombstone {
		return 0, false
	}
	return int(l.nrcpt[i]), true
}

// put records mid as live with n recipients, replacing any earlier count.
func (l *liveSet) put(mid uint64, n int) {
	c := uint32(maxCountedRcpt)
	if uint64(n) < maxCountedRcpt {
		c = uint32(n)
	}
	if k := len(l.mids); k == 0 || mid > l.mids[k-1] {
		if k == cap(l.mids) && l.dead > 0 && 32*l.dead >= k {
			// Reuse the dead slots before growing by a quarter.
			l.squeeze()
		}
		l.mids = append(l.mids, mid)
		l.nrcpt = append(l.nrcpt, c)
		return
	}
	i, found := slices.BinarySearch(l.mids, mid)
	switch {
	case found:
		if l.nrcpt[i] == tombstone {
			l.dead--
		}
		l.nrcpt[i] = c
	case i > 0 && l.nrcpt[i-1] == tombstone:
		// mids[i-2] < mids[i-1] < mid < mids[i]: the dead slot just
		// before keeps the order and saves a move.
		l.mids[i-1], l.nrcpt[i-1] = mid, c
		l.dead--
	case l.nrcpt[i] == tombstone:
		l.mids[i], l.nrcpt[i] = mid, c
		l.dead--
	default:
		l.mids = slices.Insert(l.mids, i, mid)
		l.nrcpt = slices.Insert(l.nrcpt, i, c)
	}
}

// remove forgets mid; it reports whether mid was live.
func (l *liveSet) remove(mid uint64) bool {
	i, found := slices.BinarySearch(l.mids, mid)
	if !found || l.nrcpt[i] == tombstone {
		return false
	}
	l.nrcpt[i] = tombstone
	l.dead++
	for k := len(l.mids); k > 0 && l.nrcpt[k-1] == tombstone; k-- {
		l.mids, l.nrcpt = l.mids[:k-1], l.nrcpt[:k-1]
		l.dead--
	}
	if len(l.mids) >= minSqueeze && 8*l.dead > len(l.mids) {
		l.squeeze()
	}
	return true
}

// squeeze drops the tombstones, and gives memory back when the index has
// shrunk to a small part of its capacity (a drained queue).
func (l *liveSet) squeeze() {
	n := l.len()
	mids, nrcpt := l.mids[:0], l.nrcpt[:0]
	if cap(l.mids) > 4*n+minSqueeze {
		mids, nrcpt = make([]uint64, 0, n+n/8), make([]uint32, 0, n+n/8)
	}
	for i, mid := range l.mids {
		if l.nrcpt[i] != tombstone {
			mids = append(mids, mid)
			nrcpt = append(nrcpt, l.nrcpt[i])
		}
	}
	l.mids, l.nrcpt, l.dead = mids, nrcpt, 0
}

// each calls f for every live message in ascending MID order.
func (l *liveSet) each(f func(mid uint64, n int)) {
	for i, mid := range l.mids {
		if c := l.nrcpt[i]; c != tombstone {
			f(mid, int(c))
		}
	}
}
