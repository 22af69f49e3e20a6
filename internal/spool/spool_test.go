package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost/internal/envelope"
)

func testEnv(n int) *envelope.Envelope {
	e := &envelope.Envelope{From: "a@example.org", Time: time.Now().UTC().Truncate(time.Second)}
	for i := 0; i < n; i++ {
		e.Recipients = append(e.Recipients, envelope.Recipient{Addr: "r" + string(rune('a'+i)) + "@example.com"})
	}
	return e
}

func open(t *testing.T, dir string, ops FileOps) *Spool {
	t.Helper()
	s, err := Open(dir, Options{Ops: ops, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	return s
}

func TestAcceptRecoverMark(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if _, err := s.Recover(); err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\r\n\r\nhello\r\n"
	mid := s.NewMID()
	n, err := s.Accept(mid, testEnv(3), strings.NewReader(body))
	if err != nil || n != int64(len(body)) {
		t.Fatalf("accept: %d %v", n, err)
	}
	if err := s.Mark(mid, []int{0, 2}, Delivered); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, dir, nil)
	defer s.Close()
	recs, err := s.Recover()
	if err != nil || len(recs) != 1 {
		t.Fatalf("recover: %v %d", err, len(recs))
	}
	r := recs[0]
	if r.MID != mid || r.States[0] != Delivered || r.States[1] != Pending || r.States[2] != Delivered {
		t.Fatalf("record %+v", r)
	}
	rc, size, err := s.Body(mid)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != body || size != int64(len(body)) {
		t.Fatalf("body %q", got)
	}
	if next := s.NewMID(); next <= mid {
		t.Fatalf("MID reused: %d after %d", next, mid)
	}
	// Finishing the last recipient and restarting removes the message.
	if err := s.Mark(mid, []int{1}, Bounced); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, nil)
	recs, _ = s.Recover()
	if len(recs) != 0 {
		t.Fatalf("finished message recovered: %+v", recs)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("finished message still on disk: %v", err)
	}
	s.Close()
}

func TestTornRecordMovedAside(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	s.Recover()
	mid := s.NewMID()
	if _, err := s.Accept(mid, testEnv(1), strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	p := filepath.Join(dir, "msg", "1")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, data[:len(data)-5], 0o600) // torn end marker
	os.WriteFile(filepath.Join(dir, "tmp", "99"), []byte("partial"), 0o600)
	s = open(t, dir, nil)
	defer s.Close()
	recs, err := s.Recover()
	if err != nil || len(recs) != 0 {
		t.Fatalf("%v %v", recs, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt", "1")); err != nil {
		t.Fatalf("torn record not moved aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "99")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("tmp leftover not removed")
	}
}

// failOps fails the named step once armed.
type failOps struct {
	OSOps
	step string
}

var errInjected = errors.New("injected I/O error")

func (f *failOps) Create(p string) (File, error) {
	if f.step == "create" && strings.Contains(p, "/tmp/") {
		return nil, errInjected
	}
	return f.OSOps.Create(p)
}
func (f *failOps) SyncFiles(fs []File) error {
	if f.step == "sync" {
		return errInjected
	}
	return f.OSOps.SyncFiles(fs)
}
func (f *failOps) SyncDir(d string) error {
	if f.step == "syncdir" && strings.HasSuffix(d, "msg") {
		return errInjected
	}
	return f.OSOps.SyncDir(d)
}
func (f *failOps) Rename(o, n string) error {
	if f.step == "rename" && strings.Contains(o, "/tmp/") {
		return errInjected
	}
	return f.OSOps.Rename(o, n)
}

// Every failing step of a commit returns an error and leaves no message
// behind that a client could believe accepted, while earlier accepted
// messages survive.
func TestAcceptFailureAtEachStep(t *testing.T) {
	for _, step := range []string{"create", "sync", "rename", "syncdir"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			ops := &failOps{}
			s := open(t, dir, ops)
			s.Recover()
			good := s.NewMID()
			if _, err := s.Accept(good, testEnv(1), strings.NewReader("ok\r\n")); err != nil {
				t.Fatal(err)
			}
			ops.step = step
			bad := s.NewMID()
			if _, err := s.Accept(bad, testEnv(1), strings.NewReader("bad\r\n")); !errors.Is(err, errInjected) {
				t.Fatalf("want injected error, got %v", err)
			}
			ops.step = ""
			s.Close()
			s = open(t, dir, nil)
			defer s.Close()
			recs, err := s.Recover()
			if err != nil || len(recs) != 1 || recs[0].MID != good {
				t.Fatalf("after failure at %s: %v %+v", step, err, recs)
			}
		})
	}
}

func TestJournalFailureReported(t *testing.T) {
	dir := t.TempDir()
	ops := &failOps{}
	s := open(t, dir, ops)
	defer s.Close()
	s.Recover()
	mid := s.NewMID()
	s.Accept(mid, testEnv(1), strings.NewReader("x\r\n"))
	ops.step = "sync"
	if err := s.Mark(mid, []int{0}, Delivered); !errors.Is(err, errInjected) {
		t.Fatalf("journal sync failure not reported: %v", err)
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	s.Recover()
	const n = 200
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := s.Accept(s.NewMID(), testEnv(2), strings.NewReader(strings.Repeat("line\r\n", 100)))
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, dir, nil)
	defer s.Close()
	recs, _ := s.Recover()
	if len(recs) != n {
		t.Fatalf("recovered %d of %d", len(recs), n)
	}
}

func BenchmarkAccept(b *testing.B) {
	s := open(&testing.T{}, b.TempDir(), nil)
	s.Recover()
	defer s.Close()
	body := strings.Repeat("x", 4000) + "\r\n"
	b.SetParallelism(10)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Accept(s.NewMID(), testEnv(1), strings.NewReader(body)); err != nil {
				b.Error(err)
			}
		}
	})
}

// A failed journal write may leave a torn record; the next successful Mark
// must not be hidden behind it after a restart.
func TestJournalRecoversAfterFailedWrite(t *testing.T) {
	dir := t.TempDir()
	ops := &tornJournalOps{}
	s := open(t, dir, ops)
	s.Recover()
	mid := s.NewMID()
	s.Accept(mid, testEnv(3), strings.NewReader("x\r\n"))
	ops.tear = true
	if err := s.Mark(mid, []int{0}, Delivered); err == nil {
		t.Fatal("torn journal write not reported")
	}
	ops.tear = false
	if err := s.Mark(mid, []int{1}, Bounced); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, nil)
	defer s.Close()
	recs, err := s.Recover()
	if err != nil || len(recs) != 1 {
		t.Fatalf("%v %d", err, len(recs))
	}
	if st := recs[0].States; st[1] != Bounced || st[2] != Pending {
		t.Fatalf("states after a torn journal write: %q", st)
	}
}

// tornJournalOps writes half of a journal append and fails, like a full disk.
type tornJournalOps struct {
	OSOps
	tear bool
}

func (o *tornJournalOps) OpenAppend(p string) (File, error) {
	f, err := o.OSOps.OpenAppend(p)
	if err != nil {
		return nil, err
	}
	return &tornFile{File: f, o: o}, nil
}

type tornFile struct {
	File
	o *tornJournalOps
}

func (f *tornFile) Write(b []byte) (int, error) {
	if f.o.tear {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, errInjected
	}
	return f.File.Write(b)
}
