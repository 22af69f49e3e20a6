// Package spool is Outpost's durable message store. It only stores: it
// knows nothing of SMTP, scheduling or delivery.
//
// # Layout (under the spool directory)
//
//	tmp/<mid>      message being received (never trusted at start-up)
//	msg/<mid>      accepted message: envelope + content + end marker
//	journal        append-only per-recipient state records
//	corrupt/<mid>  records that failed to parse, moved aside and kept
//	mid            reserved message-id high-water mark
//
// # Durability reasoning
//
// A message is accepted in three steps: (1) the whole record — a header line,
// the JSON envelope, the content and an end marker carrying the content
// length and CRC-32C — is written to tmp/<mid>; (2) the file's data is made
// durable (fsync); (3) it is renamed to msg/<mid> and the msg directory is
// fsynced so the new name is durable too. Only when all three are done does
// Accept return, and only then does the listener answer 250. A crash before
// (3) completes leaves either nothing or a file under tmp/, which start-up
// deletes: the client never got 250 for it and will retry. A record under
// msg/ whose end marker is missing or whose checksum does not match cannot
// come from this sequence except through storage faults; it is moved to
// corrupt/ and logged, never silently deleted.
//
// Group commit: concurrent Accepts are batched. One committer goroutine
// takes every tmp file waiting at that moment, makes all of them durable
// with one syncfs(2) (or one fsync when alone), renames them, and fsyncs the
// directory once for the batch. No caller returns before the batch that
// holds its file has completed every step.
//
// Per-recipient state (delivered / bounced) goes to the journal, also group
// committed, before the message file is removed. A crash between the
// destination's 250 and the journal write re-delivers that recipient (the
// one unavoidable duplicate window); a crash after the journal write and
// before removal leaves a message whose recipients are all final, which
// recovery removes. The journal is compacted at start-up and when it grows
// beyond a limit: the live states are written to a new file, fsynced, and
// renamed over the old one.
//
// Every file operation goes through the FileOps seam so tests can fail each
// step (and drop unsynced data) and check that nothing accepted is lost.
//
// # Memory
//
// A queue may hold a hundred thousand messages for days, so the spool keeps
// little per message: an index entry of about 13 bytes (MID and recipient
// count, see liveSet), and a state slice only for a message that has a
// final recipient state but is not finished yet. Envelopes stay on disk;
// Load reads one back (header and end marker, not the content) when the
// queue manager needs it for a retry.
package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"outpost/internal/envelope"
)

// State is a recipient's final state. Recipients without a record are
// pending.
type State byte

// Recipient states recorded in the journal.
const (
	Pending   State = 0
	Delivered State = 'D'
	Bounced   State = 'B' // permanent failure or expiry; DSN sent or not allowed
)

// Record is one accepted message as recovered from disk.
type Record struct {
	MID    uint64
	Env    envelope.Envelope
	Size   int64   // content bytes
	States []State // per recipient, aligned with Env.Recipients
}

// Options tune a spool.
type Options struct {
	// MinFree is the free space below which CheckSpace fails (default 64 MiB).
	MinFree int64
	// Ops is the file-operation seam (default: the real file system).
	Ops FileOps
	// JournalLimit triggers compaction (default 64 MiB).
	JournalLimit int64
	// Logger for operational messages (default slog.Default()).
	Logger *slog.Logger
}

// Spool is the durable store. Its methods are safe for concurrent use.
type Spool struct {
	dir  string
	opts Options
	ops  FileOps

	ids *idReserver

	commit chan *pending
	done   chan struct{}
	wg     sync.WaitGroup

	jmu     sync.Mutex
	journal File
	jsize   int64
	// live indexes the messages still in msg/ with their recipient counts;
	// states holds the per-recipient states of those live messages that
	// have at least one final state (its keys are a subset of live). A
	// message absent from states has every recipient pending: most of a
	// large queue, which then costs only its live entry.
	live    liveSet
	states  map[uint64][]State
	jwait   []chan error
	jkick   chan struct{}
	jbuf    bytes.Buffer
	jbroken bool // a journal write failed: compact before the next append
}

// ErrNoSpace is returned by CheckSpace when the disk is nearly full.
var ErrNoSpace = errors.New("spool: insufficient free disk space")

const (
	magic     = "OUTPOST1"
	endMarker = "\nOUTPOST-END "
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Open opens (creating if needed) a spool directory. Call Recover next.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MinFree == 0 {
		opts.MinFree = 64 << 20
	}
	if opts.Ops == nil {
		opts.Ops = OSOps{}
	}
	if opts.JournalLimit == 0 {
		opts.JournalLimit = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	for _, d := range []string{"tmp", "msg", "corrupt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", d, err)
		}
	}
	s := &Spool{dir: dir, opts: opts, ops: opts.Ops, commit: make(chan *pending, 4096), done: make(chan struct{}),
		states: map[uint64][]State{}, jkick: make(chan struct{}, 1)}
	ids, err := openIDs(filepath.Join(dir, "mid"), opts.Ops)
	if err != nil {
		return nil, err
	}
	s.ids = ids
	return s, nil
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

// NewMID allocates a message id, unique across restarts.
func (s *Spool) NewMID() uint64 { return s.ids.next() }

// CheckSpace fails with ErrNoSpace when less than MinFree bytes are free.
func (s *Spool) CheckSpace() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return fmt.Errorf("spool: statfs: %w", err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < s.opts.MinFree {
		return fmt.Errorf("%w: %d bytes free, %d required", ErrNoSpace, free, s.opts.MinFree)
	}
	return nil
}

type pending struct {
	mid  uint64
	f    File
	tmp  string
	dst  string
	done chan error
}

// acceptBuf are the buffers one Accept writes through, reused (they were
// ~96 KiB of garbage per accepted message). 16 KiB each: a typical message
// still goes to the file in one or two writes.
type acceptBuf struct {
	w    *bufio.Writer
	copy []byte
}

// acceptBufs keeps a few idle acceptBufs: enough for the usual number of
// concurrent injecting sessions, without sync.Pool's unbounded per-CPU and
// victim copies staying resident between garbage collections.
var acceptBufs = make(chan *acceptBuf, 16)

func getAcceptBuf() *acceptBuf {
	select {
	case b := <-acceptBufs:
		return b
	default:
		return &acceptBuf{w: bufio.NewWriterSize(nil, 16<<10), copy: make([]byte, 16<<10)}
	}
}

func putAcceptBuf(b *acceptBuf) {
	select {
	case acceptBufs <- b:
	default:
	}
}

type onlyReader struct{ io.Reader }

// Accept stores a message durably and returns the content size. It
// returns only after the record is fsynced under its final name; any
// failure returns an error and leaves nothing under msg/.
func (s *Spool) Accept(mid uint64, env *envelope.Envelope, body io.Reader) (int64, error) {
	envJSON, err := json.Marshal(env)
	if err != nil {
		return 0, fmt.Errorf("spool: encode envelope: %w", err)
	}
	name := strconv.FormatUint(mid, 10)
	tmp := filepath.Join(s.dir, "tmp", name)
	f, err := s.ops.Create(tmp)
	if err != nil {
		return 0, fmt.Errorf("spool: create %s: %w", tmp, err)
	}
	fail := func(err error) (int64, error) {
		f.Close()
		s.ops.Remove(tmp)
		return 0, err
	}
	bufs := getAcceptBuf()
	defer putAcceptBuf(bufs)
	w := bufs.w
	w.Reset(f)
	defer w.Reset(nil)
	fmt.Fprintf(w, "%s %d\n", magic, len(envJSON))
	w.Write(envJSON)
	w.WriteByte('\n')
	h := crc32.New(castagnoli)
	// onlyReader hides a WriteTo (io.MultiReader has one), which would
	// allocate its own 32 KiB buffer per message instead of using ours.
	n, err := io.CopyBuffer(io.MultiWriter(w, h), onlyReader{body}, bufs.copy)
	if err != nil {
		return fail(fmt.Errorf("spool: write %s: %w", tmp, err))
	}
	fmt.Fprintf(w, "%s%d %08x\n", endMarker, n, h.Sum32())
	if err := w.Flush(); err != nil {
		return fail(fmt.Errorf("spool: write %s: %w", tmp, err))
	}
	p := &pending{mid: mid, f: f, tmp: tmp, dst: filepath.Join(s.dir, "msg", name), done: make(chan error, 1)}
	select {
	case s.commit <- p:
	case <-s.done:
		return fail(errors.New("spool: closed"))
	}
	if err := <-p.done; err != nil {
		return 0, err
	}
	s.jmu.Lock()
	s.live.put(mid, len(env.Recipients))
	delete(s.states, mid)
	s.jmu.Unlock()
	return n, nil
}

// Start runs the committers; Close stops them.
func (s *Spool) Start() {
	s.wg.Add(2)
	go s.committer()
	go s.journaler()
}

// Close stops the committers and closes the journal.
func (s *Spool) Close() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	close(s.done)
	s.wg.Wait()
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.journal != nil {
		return s.journal.Close()
	}
	return nil
}

func (s *Spool) committer() {
	defer s.wg.Done()
	for {
		var batch []*pending
		select {
		case p := <-s.commit:
			batch = append(batch, p)
		case <-s.done:
			return
		}
	more:
		for len(batch) < 1024 {
			select {
			case p := <-s.commit:
				batch = append(batch, p)
			default:
				break more
			}
		}
		s.commitBatch(batch)
	}
}

// commitBatch makes every file durable, renames each into msg/, and makes
// the renames durable. A file whose step fails gets that error; the others
// go on.
func (s *Spool) commitBatch(batch []*pending) {
	files := make([]File, len(batch))
	for i, p := range batch {
		files[i] = p.f
	}
	syncErr := s.ops.SyncFiles(files)
	ok := batch[:0:0]
	for _, p := range batch {
		cerr := p.f.Close()
		switch {
		case syncErr != nil:
			p.done <- fmt.Errorf("spool: fsync %s: %w", p.tmp, syncErr)
			s.ops.Remove(p.tmp)
		case cerr != nil:
			p.done <- fmt.Errorf("spool: close %s: %w", p.tmp, cerr)
			s.ops.Remove(p.tmp)
		default:
			if err := s.ops.Rename(p.tmp, p.dst); err != nil {
				p.done <- fmt.Errorf("spool: rename %s: %w", p.tmp, err)
				s.ops.Remove(p.tmp)
				continue
			}
			ok = append(ok, p)
		}
	}
	if len(ok) == 0 {
		return
	}
	err := s.ops.SyncDir(filepath.Join(s.dir, "msg"))
	for _, p := range ok {
		if err != nil {
			// The name may or may not be durable: take it back so the
			// client's retry is the only copy, and report the failure.
			s.ops.Remove(p.dst)
			p.done <- fmt.Errorf("spool: fsync directory: %w", err)
			continue
		}
		p.done <- nil
	}
}

// Body opens a message's content.
func (s *Spool) Body(mid uint64) (io.ReadCloser, int64, error) {
	f, err := os.Open(filepath.Join(s.dir, "msg", strconv.FormatUint(mid, 10)))
	if err != nil {
		return nil, 0, fmt.Errorf("spool: open MID %d: %w", mid, err)
	}
	off, size, err := bodyBounds(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("spool: MID %d: %w", mid, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, size), f}, size, nil
}

// bodyBounds reads the header and the end marker and returns where the
// content lies.
func bodyBounds(f *os.File) (off, size int64, err error) {
	_, off, size, err = recordBounds(f)
	return off, size, err
}

// recordBounds reads the header and the end marker and returns where the
// envelope JSON (envOff up to the newline before off) and the content lie.
func recordBounds(f *os.File) (envOff, off, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	hdr := make([]byte, 32)
	n, _ := f.ReadAt(hdr, 0)
	line, _, found := bytes.Cut(hdr[:n], []byte("\n"))
	if !found {
		return 0, 0, 0, errors.New("no header line")
	}
	mg, l, _ := strings.Cut(string(line), " ")
	envLen, err := strconv.ParseInt(l, 10, 64)
	if mg != magic || err != nil || envLen < 0 {
		return 0, 0, 0, errors.New("bad header line")
	}
	off = int64(len(line)) + 1 + envLen + 1
	tailLen := int64(64)
	if st.Size()-off < tailLen {
		tailLen = st.Size() - off
	}
	if tailLen <= 0 {
		return 0, 0, 0, errors.New("truncated record")
	}
	tail := make([]byte, tailLen)
	if _, err := f.ReadAt(tail, st.Size()-tailLen); err != nil {
		return 0, 0, 0, err
	}
	i := bytes.LastIndex(tail, []byte(endMarker))
	if i < 0 || tail[len(tail)-1] != '\n' {
		return 0, 0, 0, errors.New("end marker missing (torn write)")
	}
	fields := strings.Fields(string(tail[i+len(endMarker) : len(tail)-1]))
	if len(fields) != 2 {
		return 0, 0, 0, errors.New("bad end marker")
	}
	size, err = strconv.ParseInt(fields[0], 10, 64)
	if err != nil || off+size != st.Size()-tailLen+int64(i) {
		return 0, 0, 0, errors.New("content length does not match end marker")
	}
	return int64(len(line)) + 1, off, size, nil
}

// readHead reads a record's envelope and the bounds of its content
// (returned in r.Size and off), with every recipient pending. It checks the
// header line and the end marker, not the content checksum: reading the
// header and the last bytes is all it costs, whatever the message's size.
func readHead(f *os.File, mid uint64) (r *Record, off int64, err error) {
	envOff, off, size, err := recordBounds(f)
	if err != nil {
		return nil, 0, err
	}
	// recordBounds found the content after the envelope and inside the
	// file: the length is the file's at most.
	envJSON := make([]byte, off-1-envOff)
	if _, err := f.ReadAt(envJSON, envOff); err != nil {
		return nil, 0, fmt.Errorf("read envelope: %w", err)
	}
	r = &Record{MID: mid, Size: size}
	if err := json.Unmarshal(envJSON, &r.Env); err != nil {
		return nil, 0, fmt.Errorf("decode envelope: %w", err)
	}
	if len(r.Env.Recipients) == 0 {
		return nil, 0, errors.New("envelope has no recipients")
	}
	r.States = make([]State, len(r.Env.Recipients))
	return r, off, nil
}

// readRecord parses and checks a whole record, content checksum included.
func readRecord(path string, mid uint64) (*Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, off, err := readHead(f, mid)
	if err != nil {
		return nil, err
	}
	size := r.Size
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil {
		return nil, err
	}
	tail := make([]byte, 64)
	st, _ := f.Stat()
	tl := int64(len(tail))
	if st.Size() < tl {
		tl = st.Size()
	}
	n, _ := f.ReadAt(tail[:tl], st.Size()-tl)
	tail = tail[:n]
	i := bytes.LastIndex(tail, []byte(endMarker))
	fields := strings.Fields(string(tail[i+len(endMarker):]))
	sum, err := strconv.ParseUint(fields[1], 16, 32)
	if err != nil || uint32(sum) != h.Sum32() {
		return nil, errors.New("content checksum mismatch")
	}
	return r, nil
}

// Load returns a queued message's record as Recover would: its MID,
// envelope, content size, and the per-recipient states (aligned with
// Env.Recipients, Pending where no final state was recorded) as the spool
// has them now: those of every Mark that has returned, and of any Mark in
// progress.
//
// It is cheap enough to call for each retry of a deferred message: it reads
// the header and the end marker only. The content checksum is not checked
// again; Recover checked it, or Accept wrote the content itself.
//
// A MID that is not queued — never accepted, removed, or not yet returned
// by Recover since start-up (the file may be there, unchecked) — gives an
// error that errors.Is matches with os.ErrNotExist. Load is safe to call
// concurrently with Accept, Mark and Remove; a message removed while it is
// being read is reported as not existing.
func (s *Spool) Load(mid uint64) (*Record, error) {
	r, rerr := s.loadHead(mid)
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if _, ok := s.live.get(mid); !ok {
		return nil, fmt.Errorf("spool: load MID %d: not in the spool: %w", mid, os.ErrNotExist)
	}
	if rerr != nil {
		return nil, fmt.Errorf("spool: load MID %d: %w", mid, rerr)
	}
	// Copied under the lock: Mark updates the slice in place.
	copy(r.States, s.states[mid])
	return r, nil
}

// loadHead reads a message's header without the spool's lock.
func (s *Spool) loadHead(mid uint64) (*Record, error) {
	f, err := os.Open(filepath.Join(s.dir, "msg", strconv.FormatUint(mid, 10)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := readHead(f, mid)
	return r, err
}

// Recover reads the spool at start-up: it deletes tmp/ leftovers, replays
// the journal, moves unparsable records to corrupt/ (logging each), removes
// messages whose recipients are all final, compacts the journal, and
// returns the messages still to deliver, oldest first.
func (s *Spool) Recover() ([]*Record, error) {
	tmps, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range tmps {
		s.ops.Remove(filepath.Join(s.dir, "tmp", e.Name()))
	}
	states, err := s.replayJournal()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "msg"))
	if err != nil {
		return nil, fmt.Errorf("spool: list messages: %w", err)
	}
	var out []*Record
	var maxMID uint64
	for _, e := range entries {
		mid, err := strconv.ParseUint(e.Name(), 10, 64)
		p := filepath.Join(s.dir, "msg", e.Name())
		if err != nil {
			s.moveAside(p, e.Name(), errors.New("file name is not a MID"))
			continue
		}
		maxMID = max(maxMID, mid)
		r, err := readRecord(p, mid)
		if err != nil {
			s.moveAside(p, e.Name(), err)
			continue
		}
		if st, ok := states[mid]; ok {
			for rid, v := range st {
				if rid < len(r.States) {
					r.States[rid] = v
				}
			}
		}
		if r.Finished() {
			s.ops.Remove(p)
			continue
		}
		out = append(out, r)
	}
	// Records moved aside keep their names: new MIDs stay above them too,
	// so a new message never overwrites a record kept for inspection.
	if aside, err := os.ReadDir(filepath.Join(s.dir, "corrupt")); err == nil {
		for _, e := range aside {
			if mid, err := strconv.ParseUint(e.Name(), 10, 64); err == nil {
				maxMID = max(maxMID, mid)
			}
		}
	}
	s.ids.atLeast(maxMID + 1)
	sort.Slice(out, func(i, j int) bool { return out[i].MID < out[j].MID })
	s.jmu.Lock()
	for _, r := range out {
		s.live.put(r.MID, len(r.States))
		delete(s.states, r.MID)
		if !allPending(r.States) {
			s.states[r.MID] = append([]State(nil), r.States...)
		}
	}
	err = s.compactLocked()
	s.jmu.Unlock()
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Spool) moveAside(path, name string, why error) {
	dst := filepath.Join(s.dir, "corrupt", name)
	if err := s.ops.Rename(path, dst); err != nil {
		s.opts.Logger.Error("spool: cannot move unreadable record aside", "file", path, "reason", why, "err", err)
		return
	}
	s.ops.SyncDir(filepath.Join(s.dir, "corrupt"))
	s.opts.Logger.Error("spool: unreadable record moved aside", "file", dst, "reason", why)
}

// Finished reports whether every recipient reached a final state.
func (r *Record) Finished() bool {
	for _, st := range r.States {
		if st == Pending {
			return false
		}
	}
	return true
}

// allPending reports whether no recipient has a final state.
func allPending(states []State) bool {
	for _, st := range states {
		if st != Pending {
			return false
		}
	}
	return true
}

// Remove deletes a finished message.
func (s *Spool) Remove(mid uint64) error {
	s.jmu.Lock()
	s.live.remove(mid)
	delete(s.states, mid)
	s.jmu.Unlock()
	if err := s.ops.Remove(filepath.Join(s.dir, "msg", strconv.FormatUint(mid, 10))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove MID %d: %w", mid, err)
	}
	return nil
}

// journal record: 8-byte MID, 4-byte RID, 1-byte state, 4-byte CRC of the
// first 13 bytes. A torn tail record fails its CRC and is ignored (its
// writer never got a success).
const jrecLen = 17

// maxJournalRID bounds the recipient index replay accepts (far above any
// listener's recipient limit).
const maxJournalRID = 1 << 20

func encodeJ(b []byte, mid uint64, rid int, st State) []byte {
	var r [jrecLen]byte
	binary.BigEndian.PutUint64(r[0:], mid)
	binary.BigEndian.PutUint32(r[8:], uint32(rid))
	r[12] = byte(st)
	binary.BigEndian.PutUint32(r[13:], crc32.Checksum(r[:13], castagnoli))
	return append(b, r[:]...)
}

func (s *Spool) replayJournal() (map[uint64][]State, error) {
	states := map[uint64][]State{}
	data, err := os.ReadFile(filepath.Join(s.dir, "journal"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: read journal: %w", err)
	}
	for len(data) >= jrecLen {
		r := data[:jrecLen]
		data = data[jrecLen:]
		if binary.BigEndian.Uint32(r[13:]) != crc32.Checksum(r[:13], castagnoli) {
			s.opts.Logger.Warn("spool: journal record with bad checksum ignored (torn write at crash)")
			break
		}
		mid, rid := binary.BigEndian.Uint64(r[0:]), int(binary.BigEndian.Uint32(r[8:]))
		if rid >= maxJournalRID {
			// No message has that many recipients: the record cannot be
			// ours, and growing a state slice to it could take gigabytes.
			s.opts.Logger.Warn("spool: journal record with an impossible recipient index ignored", "mid", mid, "rid", rid)
			continue
		}
		st := states[mid]
		for len(st) <= rid {
			st = append(st, Pending)
		}
		st[rid] = State(r[12])
		states[mid] = st
	}
	return states, nil
}

// compactLocked rewrites the journal with the states of live messages
// (those in s.states: the others have every recipient pending), in MID
// order.
func (s *Spool) compactLocked() error {
	var buf []byte
	for _, mid := range slices.Sorted(maps.Keys(s.states)) {
		for rid, v := range s.states[mid] {
			if v != Pending {
				buf = encodeJ(buf, mid, rid, v)
			}
		}
	}
	// Removals under msg/ (Remove, and Recover's removal of finished
	// messages) are not fsynced one by one: make them durable before the
	// journal forgets those messages' states, or a power loss could bring
	// back a finished message without its states and deliver it again.
	if err := s.ops.SyncDir(filepath.Join(s.dir, "msg")); err != nil {
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	tmp := filepath.Join(s.dir, "journal.tmp")
	// A journal.tmp left by a crash during an earlier compaction would
	// fail the exclusive create, and with it every later start-up.
	s.ops.Remove(tmp)
	f, err := s.ops.Create(tmp)
	if err != nil {
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	if err := s.ops.SyncFiles([]File{f}); err != nil {
		f.Close()
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	f.Close()
	if err := s.ops.Rename(tmp, filepath.Join(s.dir, "journal")); err != nil {
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	if err := s.ops.SyncDir(s.dir); err != nil {
		return fmt.Errorf("spool: compact journal: %w", err)
	}
	if s.journal != nil {
		s.journal.Close()
	}
	j, err := s.ops.OpenAppend(filepath.Join(s.dir, "journal"))
	if err != nil {
		return fmt.Errorf("spool: open journal: %w", err)
	}
	s.journal, s.jsize = j, int64(len(buf))
	return nil
}

// Mark records final states for recipients of a message and returns once
// they are durable.
func (s *Spool) Mark(mid uint64, rids []int, st State) error {
	done := make(chan error, 1)
	s.jmu.Lock()
	s.setStatesLocked(mid, rids, st)
	for _, rid := range rids {
		s.jbuf.Write(encodeJ(nil, mid, rid, st))
	}
	s.jwait = append(s.jwait, done)
	s.jmu.Unlock()
	select {
	case s.jkick <- struct{}{}:
	default:
	}
	select {
	case err := <-done:
		return err
	case <-s.done:
		return errors.New("spool: closed")
	}
}

// setStatesLocked records st in memory for the recipients rids of mid, if
// mid is live; indexes outside its recipients are ignored (their journal
// records are replayed to nothing and dropped by compaction).
func (s *Spool) setStatesLocked(mid uint64, rids []int, st State) {
	n, ok := s.live.get(mid)
	if !ok {
		return
	}
	l := s.states[mid]
	for _, rid := range rids {
		if rid < 0 || rid >= n || (l == nil && st == Pending) {
			continue
		}
		if l == nil {
			l = make([]State, n)
		}
		l[rid] = st
	}
	switch {
	case l == nil:
	case st == Pending && allPending(l):
		delete(s.states, mid)
	default:
		s.states[mid] = l
	}
}

func (s *Spool) journaler() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case <-s.jkick:
		}
		s.jmu.Lock()
		buf := append([]byte(nil), s.jbuf.Bytes()...)
		s.jbuf.Reset()
		waiters := s.jwait
		s.jwait = nil
		j := s.journal
		s.jmu.Unlock()
		if len(waiters) == 0 {
			continue
		}
		var err error
		if j == nil {
			err = errors.New("spool: journal not open (Recover not called)")
		} else {
			s.jmu.Lock()
			if s.jbroken {
				// A failed write may have left a partial record, which
				// would end replay there and hide every later record:
				// rewrite the journal from the live states (which include
				// this batch) before appending again.
				if err = s.compactLocked(); err == nil {
					s.jbroken = false
				}
				j = s.journal
			}
			s.jmu.Unlock()
			if err == nil {
				if _, err = j.Write(buf); err == nil {
					err = s.ops.SyncFiles([]File{j})
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("spool: journal: %w", err)
		}
		for _, w := range waiters {
			w <- err
		}
		s.jmu.Lock()
		s.jsize += int64(len(buf))
		if err != nil {
			s.jbroken = true
		} else if s.jsize > s.opts.JournalLimit {
			if cerr := s.compactLocked(); cerr != nil {
				s.opts.Logger.Error("spool: journal compaction failed", "err", cerr)
			}
		}
		s.jmu.Unlock()
	}
}

// List returns the MIDs under msg/ (for the queue views).
func (s *Spool) List() []uint64 {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	out := make([]uint64, 0, s.live.len())
	s.live.each(func(mid uint64, _ int) { out = append(out, mid) })
	return out
}
