package spool

// Power-loss simulation of the spool's writes.
//
// # The model
//
// plFS is a FileOps that performs every operation on a real scratch
// directory (so the spool under test reads back what it wrote) and, beside
// it, keeps a model of what a power loss would leave on the disk:
//
//   - An inode is the content of one file. Files are only ever appended to
//     (Create or OpenAppend, then Write), so the live content at any instant
//     is a prefix of the inode's final bytes, and the model keeps two
//     lengths per inode: live (bytes written) and durable (bytes written
//     before the last Sync, or the last SyncFiles that listed the file).
//     SyncFiles is modelled as "makes every listed file durable" and nothing
//     more: OSOps implements a batch with one syncfs(2), which in fact syncs
//     the whole file system, so the model is the weaker (stricter) promise.
//   - A directory has live entries (name → inode) and durable entries. Every
//     Create, OpenAppend of a new name, Rename (both the removal of the old
//     name and the new name) and Remove changes the live entries only;
//     SyncDir(dir) copies that directory's live entries to its durable ones.
//     A rename between two directories is two independent changes, one per
//     directory, each durable only when its own directory is synced.
//   - The four directories (the spool root, tmp, msg, corrupt) exist and are
//     durable: Open creates them, and Recover's journal compaction fsyncs the
//     root before any message can be accepted.
//
// After every operation the model is snapshotted (lengths and entry maps
// only). A crash at snapshot k is then materialised into a fresh directory
// in six ways — directory changes not yet synced undone (the power-loss
// case) or all applied (what a kill -9 leaves, since the page cache
// survives), times unsynced file data dropped, torn (half of it kept: a
// partial record or journal entry) or kept — and a new Spool is opened there
// and Recovered. The crash points cover every step of an Accept commit
// (create, write, sync — single and batched —, rename, fsync of msg/), of
// Mark (journal append, journal sync), of journal compaction (create, write,
// sync, rename, directory sync, reopen), of Remove, of the MID reservation,
// and, recursively, of Recover itself (a second power loss while recovering
// from the first: removal of tmp leftovers, of finished messages, moves to
// corrupt/, and the start-up compaction).
//
// # What must hold at every crash point, in every materialisation
//
//   - Every message whose Accept returned nil before the crash is recovered
//     with its exact envelope and body — or it is absent because every one of
//     its recipients had a final state recorded by Mark (it was finished; the
//     last Mark may have become durable just before it could return).
//   - No recovered message has a torn body: every record Recover returns
//     belongs to an Accept that had at least started, with exactly the
//     envelope and bytes that Accept was given. A torn record may only end up
//     in corrupt/, and only one whose Accept had not returned.
//   - Every per-recipient state confirmed by Mark is kept; a recipient that
//     is not pending carries the state some Mark was asked to record.
//   - tmp/ is empty after recovery, and NewMID hands out an id above every
//     MID handed out before the crash (ids unique across restarts).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost/internal/envelope"
)

type plInode struct {
	id      int
	name    string // path relative to the root at creation, for labels
	data    []byte // every byte ever written (append-only)
	durable int
}

type plDir struct {
	live, durable map[string]*plInode
}

// plSnap is the model right after one operation.
type plSnap struct {
	seq   int
	label string
	live  map[string]map[string]int // dir → name → inode id
	dur   map[string]map[string]int
	lens  map[int][2]int // inode id → {durable, live}
}

type plEvent struct {
	seq  int
	kind string // "newmid", "accept-start", "accepted", "mark-start", "marked", "removed"
	mid  uint64
	rids []int
	st   State
}

type plFS struct {
	mu       sync.Mutex
	root     string
	record   bool
	dirs     map[string]*plDir
	inodes   map[int]*plInode
	nextIno  int
	seq      int
	snaps    []plSnap
	events   []plEvent
	maxBatch int
	tmpWrite int
	gate     chan struct{} // when set, a SyncFiles of tmp/ files waits on it
}

var plDirs = []string{"", "tmp", "msg", "corrupt"}

// newPLFS models root, taking every file already there as durable.
func newPLFS(t testing.TB, root string, record bool) *plFS {
	fs := &plFS{root: root, record: record, dirs: map[string]*plDir{}, inodes: map[int]*plInode{}}
	for _, d := range plDirs {
		pd := &plDir{live: map[string]*plInode{}, durable: map[string]*plInode{}}
		fs.dirs[d] = pd
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(filepath.Join(root, d))
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(root, d, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			ino := fs.newInode(filepath.Join(d, e.Name()))
			ino.data, ino.durable = b, len(b)
			pd.live[e.Name()], pd.durable[e.Name()] = ino, ino
		}
	}
	fs.snapLocked("initial")
	return fs
}

func (fs *plFS) newInode(name string) *plInode {
	fs.nextIno++
	ino := &plInode{id: fs.nextIno, name: name}
	fs.inodes[ino.id] = ino
	return ino
}

func (fs *plFS) split(p string) (dir, name string) {
	rel, err := filepath.Rel(fs.root, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		panic("plFS: path outside the spool: " + p)
	}
	dir = filepath.Dir(rel)
	if dir == "." {
		dir = ""
	}
	if fs.dirs[dir] == nil {
		panic("plFS: unmodelled directory: " + p)
	}
	return dir, filepath.Base(rel)
}

// label names a crash point by what the operation is part of.
func label(op, rel string) string {
	switch {
	case strings.HasPrefix(rel, "tmp/") && op == "remove":
		return "recover:remove-tmp"
	case strings.HasPrefix(rel, "tmp/"):
		return "accept:" + op
	case rel == "msg/" && op == "syncdir":
		return "syncdir:msg"
	case strings.HasPrefix(rel, "msg/") && op == "rename":
		return "recover:move-aside"
	case strings.HasPrefix(rel, "msg/") && op == "remove":
		return "remove"
	case rel == "corrupt/":
		return "recover:move-aside-syncdir"
	case rel == "journal.tmp":
		return "compact:" + op
	case rel == "journal" && op == "openappend":
		return "compact:reopen"
	case rel == "journal" && op == "write":
		return "journal:append"
	case rel == "journal" && op == "sync":
		return "journal:sync"
	case strings.HasPrefix(rel, "mid"):
		return "mid:" + op
	case rel == "/" && op == "syncdir":
		return "root:syncdir"
	}
	return op + ":" + rel
}

func (fs *plFS) snapLocked(lbl string) {
	if !fs.record {
		return
	}
	fs.seq++
	s := plSnap{seq: fs.seq, label: lbl, live: map[string]map[string]int{}, dur: map[string]map[string]int{}, lens: map[int][2]int{}}
	for d, pd := range fs.dirs {
		s.live[d], s.dur[d] = map[string]int{}, map[string]int{}
		for n, ino := range pd.live {
			s.live[d][n] = ino.id
			s.lens[ino.id] = [2]int{ino.durable, len(ino.data)}
		}
		for n, ino := range pd.durable {
			s.dur[d][n] = ino.id
			s.lens[ino.id] = [2]int{ino.durable, len(ino.data)}
		}
	}
	fs.snaps = append(fs.snaps, s)
}

func (fs *plFS) event(e plEvent) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	e.seq = fs.seq
	fs.events = append(fs.events, e)
}

type plFile struct {
	*os.File
	fs  *plFS
	ino *plInode
}

func (f *plFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.data = append(f.ino.data, p[:n]...)
	if strings.HasPrefix(f.ino.name, "tmp/") {
		f.fs.tmpWrite++
	}
	f.fs.snapLocked(label("write", f.ino.name))
	return n, err
}

// Sync makes the data durable in the model; the scratch directory needs no
// real fsync.
func (f *plFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.durable = len(f.ino.data)
	f.fs.snapLocked(label("sync", f.ino.name))
	return nil
}

func (fs *plFS) open(p, op string, flag int) (File, error) {
	f, err := os.OpenFile(p, flag, 0o600)
	if err != nil {
		return nil, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n := fs.split(p)
	ino := fs.dirs[d].live[n]
	if ino == nil {
		ino = fs.newInode(filepath.Join(d, n))
		fs.dirs[d].live[n] = ino
	}
	fs.snapLocked(label(op, filepath.Join(d, n)))
	return &plFile{File: f, fs: fs, ino: ino}, nil
}

func (fs *plFS) Create(p string) (File, error) {
	return fs.open(p, "create", os.O_CREATE|os.O_EXCL|os.O_WRONLY)
}

func (fs *plFS) OpenAppend(p string) (File, error) {
	return fs.open(p, "openappend", os.O_CREATE|os.O_WRONLY|os.O_APPEND)
}

func (fs *plFS) SyncFiles(files []File) error {
	if len(files) == 0 {
		return nil
	}
	name := files[0].(*plFile).ino.name
	if g := fs.gate; g != nil && strings.HasPrefix(name, "tmp/") {
		<-g
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, f := range files {
		f.(*plFile).ino.durable = len(f.(*plFile).ino.data)
	}
	fs.maxBatch = max(fs.maxBatch, len(files))
	lbl := label("sync", name)
	if len(files) > 1 {
		lbl += "-batch"
	}
	fs.snapLocked(lbl)
	return nil
}

func (fs *plFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, _ := fs.split(filepath.Join(dir, "x"))
	pd := fs.dirs[d]
	pd.durable = make(map[string]*plInode, len(pd.live))
	for n, ino := range pd.live {
		pd.durable[n] = ino
	}
	fs.snapLocked(label("syncdir", d+"/"))
	return nil
}

func (fs *plFS) Rename(o, n string) error {
	if err := os.Rename(o, n); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	od, on := fs.split(o)
	nd, nn := fs.split(n)
	ino := fs.dirs[od].live[on]
	delete(fs.dirs[od].live, on)
	fs.dirs[nd].live[nn] = ino
	ino.name = filepath.Join(nd, nn)
	fs.snapLocked(label("rename", filepath.Join(od, on)))
	return nil
}

func (fs *plFS) Remove(p string) error {
	if err := os.Remove(p); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n := fs.split(p)
	delete(fs.dirs[d].live, n)
	fs.snapLocked(label("remove", filepath.Join(d, n)))
	return nil
}

// plMode is one way of materialising a crash.
type plMode struct {
	undoDirs bool
	data     string // "drop", "torn", "keep"
}

func (m plMode) String() string {
	if m.undoDirs {
		return "dirs-undone/data-" + m.data
	}
	return "dirs-applied/data-" + m.data
}

var plModes = []plMode{{true, "drop"}, {true, "torn"}, {true, "keep"}, {false, "drop"}, {false, "torn"}, {false, "keep"}}

// materialize writes what a crash at snapshot s leaves into dst.
func (fs *plFS) materialize(t testing.TB, s plSnap, m plMode, dst string) {
	ents := s.live
	if m.undoDirs {
		ents = s.dur
	}
	for _, d := range plDirs {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o700); err != nil {
			t.Fatal(err)
		}
		for n, id := range ents[d] {
			l := s.lens[id]
			size := l[0]
			switch m.data {
			case "torn":
				size = l[0] + (l[1]-l[0])/2
			case "keep":
				size = l[1]
			}
			if err := os.WriteFile(filepath.Join(dst, d, n), fs.inodes[id].data[:size], 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// plWorld is what the workload asked of the spool, for checking.
type plWorld struct {
	mu     sync.Mutex
	envs   map[uint64][]byte // envelope JSON
	bodies map[uint64][]byte
	nrcpt  map[uint64]int
}

func (w *plWorld) add(mid uint64, env *envelope.Envelope, body []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j, _ := json.Marshal(env)
	w.envs[mid], w.bodies[mid], w.nrcpt[mid] = j, body, len(env.Recipients)
}

var plLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

const plJournalLimit = 12 * jrecLen // compaction every dozen records

// plWorkload drives a spool through accepts (single, large and batched),
// marks, removals and journal compactions, recording every confirmation.
func plWorkload(t *testing.T, dir string) (*plFS, *plWorld) {
	fs := newPLFS(t, dir, true)
	w := &plWorld{envs: map[uint64][]byte{}, bodies: map[uint64][]byte{}, nrcpt: map[uint64]int{}}
	s, err := Open(dir, Options{Ops: fs, MinFree: 1, JournalLimit: plJournalLimit, Logger: plLogger})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	if _, err := s.Recover(); err != nil {
		t.Fatal(err)
	}
	accept := func(i int) uint64 {
		mid := s.NewMID()
		fs.event(plEvent{kind: "newmid", mid: mid})
		env := testEnv(1 + i%3)
		env.EnvID = fmt.Sprintf("env-%d", i)
		body := []byte(fmt.Sprintf("Subject: message %d\r\n\r\n%s", i, strings.Repeat(fmt.Sprintf("line %d\r\n", i), 1+i*7)))
		if i == 3 {
			// Larger than the 64 KiB write buffer: several writes, so a
			// crash can fall between two of them.
			body = append(body, bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 2500)...)
		}
		w.add(mid, env, body)
		fs.event(plEvent{kind: "accept-start", mid: mid})
		if _, err := s.Accept(mid, env, bytes.NewReader(body)); err != nil {
			t.Errorf("accept %d: %v", mid, err)
			return mid
		}
		fs.event(plEvent{kind: "accepted", mid: mid})
		return mid
	}
	mark := func(mid uint64, rids []int, st State) {
		fs.event(plEvent{kind: "mark-start", mid: mid, rids: rids, st: st})
		if err := s.Mark(mid, rids, st); err != nil {
			t.Errorf("mark %d: %v", mid, err)
			return
		}
		fs.event(plEvent{kind: "marked", mid: mid, rids: rids, st: st})
	}
	finish := func(mid uint64, n int) {
		var rest []int
		for r := 1; r < n; r++ {
			rest = append(rest, r)
		}
		if len(rest) > 0 {
			mark(mid, rest, Bounced)
		}
		if err := s.Remove(mid); err != nil {
			t.Errorf("remove %d: %v", mid, err)
		}
		fs.event(plEvent{kind: "removed", mid: mid})
	}

	// Sequential: every step of each commit is its own crash point.
	var keep []uint64
	for i := 0; i < 10; i++ {
		mid := accept(i)
		mark(mid, []int{0}, Delivered)
		if i%2 == 0 {
			finish(mid, 1+i%3)
		} else {
			keep = append(keep, mid)
		}
	}
	// Group commit: hold the first fsync until eight Accepts wait, so the
	// next batch holds seven files and goes through one SyncFiles.
	fs.gate = make(chan struct{})
	var wg sync.WaitGroup
	mids := make([]uint64, 8)
	for i := range mids {
		wg.Add(1)
		go func(i int) { defer wg.Done(); mids[i] = accept(10 + i) }(i)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		fs.mu.Lock()
		n := fs.tmpWrite
		fs.mu.Unlock()
		if n >= 8 || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(50 * time.Millisecond) // let the writers reach the commit queue
	close(fs.gate)
	wg.Wait()
	fs.gate = nil
	// Concurrent marks: one journal group commit for several of them.
	for _, mid := range mids {
		wg.Add(1)
		go func(mid uint64) { defer wg.Done(); mark(mid, []int{0}, Delivered) }(mid)
	}
	wg.Wait()
	for i, mid := range mids {
		if i%2 == 0 {
			finish(mid, 1+(10+i)%3)
		}
	}
	// Finish some of the earlier ones: more journal records, compactions
	// and removals after compactions.
	for _, mid := range keep[:3] {
		finish(mid, w.nrcpt[mid])
	}
	accept(20)
	return fs, w
}

// plExpect is what was confirmed before crash point seq.
type plExpect struct {
	attempted, accepted, removed map[uint64]bool
	maxMID                       uint64
	confirmed, issued            map[uint64]map[int]State
}

func (fs *plFS) expect(seq int) *plExpect {
	e := &plExpect{attempted: map[uint64]bool{}, accepted: map[uint64]bool{}, removed: map[uint64]bool{},
		confirmed: map[uint64]map[int]State{}, issued: map[uint64]map[int]State{}}
	set := func(m map[uint64]map[int]State, mid uint64, rids []int, st State) {
		if m[mid] == nil {
			m[mid] = map[int]State{}
		}
		for _, r := range rids {
			m[mid][r] = st
		}
	}
	for _, ev := range fs.events {
		if ev.seq > seq {
			break
		}
		switch ev.kind {
		case "newmid":
			e.maxMID = max(e.maxMID, ev.mid)
		case "accept-start":
			e.attempted[ev.mid] = true
		case "accepted":
			e.accepted[ev.mid] = true
		case "mark-start":
			set(e.issued, ev.mid, ev.rids, ev.st)
		case "marked":
			set(e.confirmed, ev.mid, ev.rids, ev.st)
		case "removed":
			e.removed[ev.mid] = true
		}
	}
	return e
}

// plCheck opens a spool on dir, recovers it (through ops) and checks the
// invariants against e. It returns a description of every violation.
func plCheck(dir string, ops FileOps, w *plWorld, e *plExpect) (errs []string) {
	s, err := Open(dir, Options{Ops: ops, MinFree: 1, JournalLimit: plJournalLimit, Logger: plLogger})
	if err != nil {
		return []string{"open: " + err.Error()}
	}
	s.Start()
	defer s.Close()
	recs, err := s.Recover()
	if err != nil {
		return []string{"recover: " + err.Error()}
	}
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	seen := map[uint64]bool{}
	for _, r := range recs {
		seen[r.MID] = true
		if !e.attempted[r.MID] {
			bad("MID %d recovered but no Accept had started for it", r.MID)
			continue
		}
		j, _ := json.Marshal(&r.Env)
		if !bytes.Equal(j, w.envs[r.MID]) {
			bad("MID %d: envelope %s, want %s", r.MID, j, w.envs[r.MID])
		}
		rc, size, err := s.Body(r.MID)
		if err != nil {
			bad("MID %d: body: %v", r.MID, err)
		} else {
			b, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(b, w.bodies[r.MID]) || size != int64(len(b)) {
				bad("MID %d: body torn or wrong (%d bytes, want %d)", r.MID, len(b), len(w.bodies[r.MID]))
			}
		}
		for rid, st := range r.States {
			if c, ok := e.confirmed[r.MID][rid]; ok && st != c {
				bad("MID %d RID %d: state %q after recovery, but Mark confirmed %q", r.MID, rid, st, c)
			} else if !ok && st != Pending && e.issued[r.MID][rid] != st {
				bad("MID %d RID %d: state %q that no Mark asked for", r.MID, rid, st)
			}
		}
	}
	corrupt := map[uint64]bool{}
	cents, _ := os.ReadDir(filepath.Join(dir, "corrupt"))
	for _, c := range cents {
		var mid uint64
		fmt.Sscan(c.Name(), &mid)
		corrupt[mid] = true
		if e.accepted[mid] {
			bad("MID %d: accepted (Accept returned nil) but moved to corrupt/", mid)
		}
	}
	for mid := range e.accepted {
		if seen[mid] {
			continue
		}
		// Absent is right only for a finished message: every recipient
		// final in the journal (confirmed, or durable just before the Mark
		// call returned).
		if len(e.issued[mid]) < w.nrcpt[mid] {
			bad("MID %d: accepted and not finished, but lost (confirmed states %v)", mid, e.confirmed[mid])
		}
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) > 0 {
		bad("tmp/ not emptied: %d entries", len(tmps))
	}
	if next := s.NewMID(); next <= e.maxMID {
		bad("NewMID %d after recovery, but MID %d was handed out before the crash", next, e.maxMID)
	}
	return errs
}

func TestPowerLossAtEveryStep(t *testing.T) {
	// Thousands of small spools are written and recovered: on tmpfs when
	// there is one, since the model (not the disk) provides durability and
	// ext4 flushes data on every rename over an existing file.
	base := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "outpost-powerloss"); err == nil {
		base = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	fs, w := plWorkload(t, filepath.Join(base, "live"))
	if t.Failed() {
		t.FailNow()
	}
	required := []string{
		"accept:create", "accept:write", "accept:sync", "accept:sync-batch", "accept:rename", "syncdir:msg",
		"journal:append", "journal:sync",
		"compact:create", "compact:write", "compact:sync", "compact:rename", "root:syncdir", "compact:reopen",
		"remove", "mid:create", "mid:write", "mid:sync", "mid:rename",
	}
	counts := map[string]int{}
	for _, s := range fs.snaps {
		counts[s.label]++
	}
	for _, l := range required {
		if counts[l] == 0 {
			t.Errorf("no crash point at %s (points: %v)", l, counts)
		}
	}
	if fs.maxBatch < 2 {
		t.Errorf("group commit never synced more than one file at once")
	}

	// Level 2: recovering from a crash, crash again at every step of
	// Recover, for the harshest and the mildest first crash.
	nested := map[plMode]bool{{true, "drop"}: true, {false, "keep"}: true}
	nestedModes := []plMode{{true, "drop"}, {false, "torn"}}
	if testing.Short() {
		nestedModes = nestedModes[:1]
	}
	var n, n2 int
	byLabel := map[string]int{}
	fail := 0
	for _, s := range fs.snaps {
		e := fs.expect(s.seq)
		for _, m := range plModes {
			n++
			dst, err := os.MkdirTemp(base, "crash")
			if err != nil {
				t.Fatal(err)
			}
			fs.materialize(t, s, m, dst)
			var rfs *plFS
			var ops FileOps = newPLFS(t, dst, false)
			if nested[m] {
				rfs = newPLFS(t, dst, true)
				ops = rfs
			}
			for _, msg := range plCheck(dst, ops, w, e) {
				if fail++; fail <= 20 {
					t.Errorf("crash after op %d (%s), %s: %s", s.seq, s.label, m, msg)
				}
			}
			if rfs != nil {
				for _, s2 := range rfs.snaps[1:] {
					byLabel[s2.label]++
					for _, m2 := range nestedModes {
						n2++
						dst2, err := os.MkdirTemp(base, "crash2")
						if err != nil {
							t.Fatal(err)
						}
						rfs.materialize(t, s2, m2, dst2)
						for _, msg := range plCheck(dst2, newPLFS(t, dst2, false), w, e) {
							if fail++; fail <= 20 {
								t.Errorf("crash after op %d (%s), %s; then during recovery after op %d (%s), %s: %s",
									s.seq, s.label, m, s2.seq, s2.label, m2, msg)
							}
						}
						os.RemoveAll(dst2)
					}
				}
			}
			os.RemoveAll(dst)
		}
	}
	labels := make([]string, 0, len(counts))
	for l, c := range counts {
		labels = append(labels, fmt.Sprintf("%s=%d", l, c))
	}
	sort.Strings(labels)
	rlabels := make([]string, 0, len(byLabel))
	for l, c := range byLabel {
		rlabels = append(rlabels, fmt.Sprintf("%s=%d", l, c))
	}
	sort.Strings(rlabels)
	t.Logf("%d crash points in the workload (%s), %d materialisations recovered; %d crash points during recovery (%s), %d second-level recoveries; largest fsync batch %d files; %d violations",
		len(fs.snaps), strings.Join(labels, " "), n, len(rlabels), strings.Join(rlabels, " "), n2, fs.maxBatch, fail)
}
