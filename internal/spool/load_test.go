package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

func mustLoad(t *testing.T, s *Spool, mid uint64) *Record {
	t.Helper()
	r, err := s.Load(mid)
	if err != nil {
		t.Fatalf("Load(%d): %v", mid, err)
	}
	return r
}

func wantNotExist(t *testing.T, s *Spool, mid uint64) {
	t.Helper()
	r, err := s.Load(mid)
	if !errors.Is(err, os.ErrNotExist) || r != nil {
		t.Fatalf("Load(%d) = %+v, %v; want an os.ErrNotExist error", mid, r, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprint("MID ", mid)) {
		t.Fatalf("Load(%d) error %q does not name the MID", mid, err)
	}
}

func TestLoadFollowsAcceptMarkRemove(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	defer s.Close()
	if _, err := s.Recover(); err != nil {
		t.Fatal(err)
	}
	wantNotExist(t, s, 1)
	env := testEnv(3)
	body := "Subject: hi\r\n\r\nhello\r\n"
	mid := s.NewMID()
	if _, err := s.Accept(mid, env, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	want, _ := jsonRoundTrip(env)
	r := mustLoad(t, s, mid)
	if r.MID != mid || r.Size != int64(len(body)) || !reflect.DeepEqual(r.Env, *want) {
		t.Fatalf("Load after Accept: %+v, want MID %d size %d env %+v", r, mid, len(body), want)
	}
	if !slices.Equal(r.States, []State{Pending, Pending, Pending}) {
		t.Fatalf("states after Accept: %q", r.States)
	}

	if err := s.Mark(mid, []int{0, 2}, Delivered); err != nil {
		t.Fatal(err)
	}
	r = mustLoad(t, s, mid)
	if !slices.Equal(r.States, []State{Delivered, Pending, Delivered}) {
		t.Fatalf("states after Mark: %q", r.States)
	}
	// The record is the caller's: changing it changes nothing in the spool.
	r.States[1] = Bounced
	if r = mustLoad(t, s, mid); r.States[1] != Pending {
		t.Fatalf("Load returned the spool's own state slice: %q", r.States)
	}

	if err := s.Mark(mid, []int{1}, Bounced); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(mid); err != nil {
		t.Fatal(err)
	}
	wantNotExist(t, s, mid)
}

func TestLoadAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	s.Recover()
	var mids []uint64
	for i := range 3 {
		mid := s.NewMID()
		if _, err := s.Accept(mid, testEnv(1+i), strings.NewReader(strings.Repeat("x", 100*i))); err != nil {
			t.Fatal(err)
		}
		mids = append(mids, mid)
	}
	if err := s.Mark(mids[2], []int{1}, Bounced); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, dir, nil)
	defer s.Close()
	// Before Recover nothing is known to be intact.
	wantNotExist(t, s, mids[0])
	recs, err := s.Recover()
	if err != nil || len(recs) != 3 {
		t.Fatalf("recover: %v, %d records", err, len(recs))
	}
	for _, rec := range recs {
		if got := mustLoad(t, s, rec.MID); !reflect.DeepEqual(got, rec) {
			t.Errorf("Load(%d) = %+v, Recover gave %+v", rec.MID, got, rec)
		}
	}
	if st := mustLoad(t, s, mids[2]).States; !slices.Equal(st, []State{Pending, Bounced, Pending}) {
		t.Fatalf("states after restart: %q", st)
	}
}

// Load reads the header and the end marker, not the content: a flipped
// content byte goes unnoticed (Recover's checksum pass is the check).
func TestLoadSkipsContentChecksum(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	defer s.Close()
	s.Recover()
	mid := s.NewMID()
	if _, err := s.Accept(mid, testEnv(1), strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "msg", fmt.Sprint(mid))
	data, _ := os.ReadFile(p)
	i := strings.Index(string(data), "body")
	data[i] = 'B'
	os.WriteFile(p, data, 0o600)
	if _, err := readRecord(p, mid); err == nil {
		t.Fatal("readRecord missed the flipped byte")
	}
	mustLoad(t, s, mid)

	// A header that no longer parses is an error, not "not found".
	os.WriteFile(p, []byte("OUTPOST1 x\n"), 0o600)
	if _, err := s.Load(mid); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a damaged record: %v", err)
	}
}

// Load, Mark, Remove and Accept from many goroutines (run with -race):
// a Load sees either the message with the states of every Mark that
// returned before it, or, once Remove has begun, "not found".
func TestLoadConcurrent(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	defer s.Close()
	s.Recover()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mid := s.NewMID()
			if _, err := s.Accept(mid, testEnv(2), strings.NewReader("x\r\n")); err != nil {
				errs <- err
				return
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					r, err := s.Load(mid)
					if errors.Is(err, os.ErrNotExist) {
						return
					}
					if err != nil || r.MID != mid || len(r.States) != 2 || r.States[1] != Pending {
						errs <- fmt.Errorf("Load(%d) = %+v, %v", mid, r, err)
						return
					}
				}
			}()
			if err := s.Mark(mid, []int{0}, Delivered); err != nil {
				errs <- err
			}
			if r, err := s.Load(mid); err != nil || r.States[0] != Delivered {
				errs <- fmt.Errorf("Load(%d) after Mark = %+v, %v", mid, r, err)
			}
			if err := s.Remove(mid); err != nil {
				errs <- err
			}
			<-done
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l := s.List(); len(l) != 0 {
		t.Fatalf("List after removing everything: %v", l)
	}
}

// The in-memory states keep the old map's semantics: Mark of a message
// that is not live records nothing in memory, indexes outside the
// recipients are ignored, marking back to Pending forgets, and compaction
// writes exactly the final states of live messages.
func TestLiveStatesSemantics(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	defer s.Close()
	s.Recover()
	a, b := s.NewMID(), s.NewMID()
	for _, mid := range []uint64{a, b} {
		if _, err := s.Accept(mid, testEnv(2), strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	const ghost = 999
	steps := []struct {
		mid  uint64
		rids []int
		st   State
	}{
		{ghost, []int{0}, Delivered}, // not live
		{a, []int{5, -1}, Delivered}, // outside the recipients
		{b, []int{1}, Bounced},
		{b, []int{1}, Pending}, // back to all pending
		{a, []int{1}, Delivered},
	}
	for _, st := range steps {
		if err := s.Mark(st.mid, st.rids, st.st); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.List(); !slices.Equal(l, []uint64{a, b}) {
		t.Fatalf("List = %v", l)
	}
	if len(s.states) != 1 || s.states[b] != nil {
		t.Fatalf("states kept for %v, want only MID %d", s.states, a)
	}
	s.jmu.Lock()
	err := s.compactLocked()
	s.jmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	j, _ := os.ReadFile(filepath.Join(dir, "journal"))
	if want := encodeJ(nil, a, 1, Delivered); string(j) != string(want) {
		t.Fatalf("compacted journal %x, want %x", j, want)
	}
	if got := mustLoad(t, s, a).States; !slices.Equal(got, []State{Pending, Delivered}) {
		t.Fatalf("states of %d: %q", a, got)
	}
	if got := mustLoad(t, s, b).States; !slices.Equal(got, []State{Pending, Pending}) {
		t.Fatalf("states of %d: %q", b, got)
	}
	wantNotExist(t, s, ghost)
}
