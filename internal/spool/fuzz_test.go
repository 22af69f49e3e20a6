package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"outpost/internal/envelope"
)

// noSyncOps is the real file system without fsyncs: the fuzz targets check
// the record format, not durability, and run thousands of times a second.
type noSyncOps struct{ OSOps }

func (noSyncOps) SyncFiles([]File) error { return nil }
func (noSyncOps) SyncDir(string) error   { return nil }

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// validRecord renders a record the way Accept writes it.
func validRecord(env *envelope.Envelope, body []byte) []byte {
	var b bytes.Buffer
	j, _ := jsonMarshal(env)
	fmt.Fprintf(&b, "%s %d\n", magic, len(j))
	b.Write(j)
	b.WriteByte('\n')
	b.Write(body)
	fmt.Fprintf(&b, "%s%d %08x\n", endMarker, len(body), crc32.Checksum(body, castagnoli))
	return b.Bytes()
}

// FuzzReadRecord feeds arbitrary bytes to the message-record decoder
// (bodyBounds, readHead and readRecord) and to start-up recovery: no
// panic, no allocation beyond the file's size; a record that decodes has
// recipients, and its content bounds lie inside the file and end at the
// end marker; readHead (Load's cheap read) accepts every record readRecord
// accepts and decodes it the same; recovery either returns it or moves it
// to corrupt/, never loses it, and Load then gives what Recover gave.
// The seed corpus is in testdata/fuzz/FuzzReadRecord.
func FuzzReadRecord(f *testing.F) {
	env := &envelope.Envelope{From: "a@b.example", Recipients: []envelope.Recipient{{Addr: "c@d.example"}}, Time: time.Unix(0, 0).UTC()}
	f.Add(validRecord(env, []byte("Subject: x\r\n\r\nbody\r\n")))
	f.Add(validRecord(env, nil))
	f.Add([]byte("OUTPOST1 2\n{}\nx\nOUTPOST-END 1 00000000\n"))
	f.Add([]byte("OUTPOST1 9223372036854775800\n\nOUTPOST-END 5 00000000\n"))
	f.Add([]byte("OUTPOST1 -1\n"))
	f.Add([]byte("OUTPOST1 3\n{}\n\nOUTPOST-END -1 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "rec")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		off, size, berr := bodyBounds(fh)
		fh.Close()
		if berr == nil {
			if off < 0 || size < 0 || off+size > int64(len(data)) || off+size < off {
				t.Fatalf("bodyBounds %d+%d outside a %d-byte file", off, size, len(data))
			}
			if !bytes.HasPrefix(data[off+size:], []byte(endMarker)) {
				t.Fatalf("content %d+%d not followed by the end marker", off, size)
			}
		}
		r, recErr := readRecord(p, 7)
		fh, err = os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		head, hoff, herr := readHead(fh, 7)
		fh.Close()
		if herr == nil && (berr != nil || hoff != off || head.Size != size) {
			t.Fatalf("readHead: content at %d+%d, bodyBounds %d+%d (%v)", hoff, head.Size, off, size, berr)
		}
		if recErr == nil {
			if berr != nil {
				t.Fatalf("readRecord accepted what bodyBounds refused: %v", berr)
			}
			if len(r.Env.Recipients) == 0 || len(r.States) != len(r.Env.Recipients) || r.Size != size || r.MID != 7 {
				t.Fatalf("record %+v", r)
			}
			if herr != nil || !reflect.DeepEqual(head, r) {
				t.Fatalf("readHead %+v (%v), readRecord %+v", head, herr, r)
			}
		}

		// Recovery: the file is returned or moved aside, never dropped.
		sd := filepath.Join(dir, "spool")
		s, err := Open(sd, Options{Ops: noSyncOps{}, MinFree: 1, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sd, "msg", "7"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, rerr := s.Recover()
		if rerr != nil {
			t.Fatalf("Recover: %v", rerr)
		}
		_, aside := os.Stat(filepath.Join(sd, "corrupt", "7"))
		switch {
		case recErr == nil && (len(recs) != 1 || aside == nil):
			t.Fatalf("readable record: %d recovered, moved aside %v", len(recs), aside == nil)
		case recErr != nil && (len(recs) != 0 || aside != nil):
			t.Fatalf("unreadable record (%v): %d recovered, moved aside %v", recErr, len(recs), aside == nil)
		}
		if l, err := s.Load(7); len(recs) == 1 && (err != nil || !reflect.DeepEqual(l, recs[0])) {
			t.Fatalf("Load after Recover: %+v, %v; Recover gave %+v", l, err, recs[0])
		} else if len(recs) == 0 && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Load of a record Recover refused: %+v, %v", l, err)
		}
		if len(recs) == 1 {
			rc, n, err := s.Body(7)
			if err != nil {
				t.Fatalf("Body of a recovered record: %v", err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if int64(len(got)) != n || !bytes.Equal(got, data[off:off+size]) {
				t.Fatalf("Body %q, want %q", got, data[off:off+size])
			}
		}
	})
}

// FuzzRecordRoundTrip stores an arbitrary envelope and content with Accept
// and checks that recovery gives back exactly what was stored.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("a@b.example", "c@d.example", "utf-8;\\x{E9}", []byte("Subject: x\r\n\r\nbody\r\n"), uint8(1))
	f.Add("", "x@y.example", "", []byte("\nOUTPOST-END 5 00000000\n"), uint8(3))
	f.Add("\x00\xff\"", "\n", "rfc822;a+40b", []byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, from, rcpt, orcpt string, body []byte, n uint8) {
		env := &envelope.Envelope{From: from, EnvID: orcpt, Time: time.Unix(1700000000, 0).UTC()}
		for i := 0; i <= int(n%8); i++ {
			env.Recipients = append(env.Recipients, envelope.Recipient{Addr: fmt.Sprint(i, rcpt), ORCPT: orcpt})
		}
		dir := t.TempDir()
		s, err := Open(dir, Options{Ops: noSyncOps{}, MinFree: 1, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		defer s.Close()
		if _, err := s.Recover(); err != nil {
			t.Fatal(err)
		}
		mid := s.NewMID()
		size, err := s.Accept(mid, env, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Mark(mid, []int{0}, Delivered); err != nil {
			t.Fatal(err)
		}
		want, _ := jsonRoundTrip(env)
		l, err := s.Load(mid)
		if err != nil || l.MID != mid || l.Size != size || !reflect.DeepEqual(l.Env, *want) ||
			len(l.States) != len(env.Recipients) || l.States[0] != Delivered {
			t.Fatalf("Load after Accept and Mark: %+v, %v", l, err)
		}
		s.Close()
		s2, err := Open(dir, Options{Ops: noSyncOps{}, MinFree: 1, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		s2.Start()
		defer s2.Close()
		recs, err := s2.Recover()
		if len(env.Recipients) == 1 {
			if err != nil || len(recs) != 0 {
				t.Fatalf("finished message recovered: %v %d", err, len(recs))
			}
			return
		}
		if err != nil || len(recs) != 1 {
			t.Fatalf("recover: %v, %d records", err, len(recs))
		}
		r := recs[0]
		if l, err := s2.Load(mid); err != nil || !reflect.DeepEqual(l, r) {
			t.Fatalf("Load after Recover: %+v, %v; Recover gave %+v", l, err, r)
		}
		if r.MID != mid || r.Size != size || size != int64(len(body)) || !reflect.DeepEqual(r.Env, *want) {
			t.Fatalf("recovered %+v, stored %+v", r, want)
		}
		if r.States[0] != Delivered || r.States[1] != Pending {
			t.Fatalf("states %v", r.States)
		}
		rc, _, err := s2.Body(mid)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, body) {
			t.Fatalf("content %q, stored %q", got, body)
		}
	})
}

// FuzzJournalReplay replays journals made of well-formed records (the
// fuzzer chooses MID, recipient index and state; the harness seals each
// with its CRC) followed by arbitrary bytes: replay never panics and never
// allocates for a recipient index no message can have, the last record for
// a recipient wins, and replay stops at the first record whose CRC fails.
func FuzzJournalReplay(f *testing.F) {
	rec := func(mid uint64, rid uint32, st byte) []byte {
		var b [13]byte
		binary.BigEndian.PutUint64(b[:], mid)
		binary.BigEndian.PutUint32(b[8:], rid)
		b[12] = st
		return b[:]
	}
	f.Add(append(rec(1, 0, 'D'), rec(1, 2, 'B')...), []byte{})
	f.Add(rec(5, 0xffffffff, 'D'), []byte("torn"))
	f.Add(append(rec(2, 1, 'D'), rec(2, 1, 'B')...), encodeJ(nil, 9, 0, Delivered)[:10])
	f.Fuzz(func(t *testing.T, recs, tail []byte) {
		if len(recs) > 13*4096 {
			return
		}
		var journal []byte
		type key struct {
			mid uint64
			rid int
		}
		want := map[key]State{}
		for len(recs) >= 13 {
			r := recs[:13]
			recs = recs[13:]
			mid, rid, st := binary.BigEndian.Uint64(r), binary.BigEndian.Uint32(r[8:]), State(r[12])
			journal = encodeJ(journal, mid, int(rid), st)
			if int(rid) < maxJournalRID {
				want[key{mid, int(rid)}] = st
			}
		}
		// The tail is ignored from its first record with a bad CRC.
		for len(tail) >= jrecLen {
			r := tail[:jrecLen]
			if binary.BigEndian.Uint32(r[13:]) != crc32.Checksum(r[:13], castagnoli) {
				break
			}
			tail = tail[jrecLen:]
			journal = append(journal, r...)
			mid, rid := binary.BigEndian.Uint64(r), int(binary.BigEndian.Uint32(r[8:]))
			if rid < maxJournalRID {
				want[key{mid, rid}] = State(r[12])
			}
		}
		journal = append(journal, tail...)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "journal"), journal, 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Spool{dir: dir, opts: Options{Logger: quietLog}}
		states, err := s.replayJournal()
		if err != nil {
			t.Fatal(err)
		}
		got := map[key]State{}
		for mid, sts := range states {
			if len(sts) > maxJournalRID {
				t.Fatalf("MID %d: %d states allocated", mid, len(sts))
			}
			for rid, st := range sts {
				if st != Pending {
					got[key{mid, rid}] = st
				}
			}
		}
		for k, st := range want {
			if st == Pending {
				delete(want, k)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("replayed %v, want %v", got, want)
		}
	})
}

// jsonMarshal encodes an envelope as Accept does; jsonRoundTrip is what
// a reader gets back (JSON replaces invalid UTF-8 with U+FFFD).
func jsonMarshal(env *envelope.Envelope) ([]byte, error) { return json.Marshal(env) }

func jsonRoundTrip(env *envelope.Envelope) (*envelope.Envelope, error) {
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	var out envelope.Envelope
	err = json.Unmarshal(b, &out)
	return &out, err
}
