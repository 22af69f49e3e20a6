package spool

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// File is the part of *os.File the spool uses.
type File interface {
	Write(p []byte) (int, error)
	Close() error
	Fd() uintptr
	Sync() error
}

// FileOps is the seam through which the spool touches the file system.
type FileOps interface {
	Create(path string) (File, error)
	OpenAppend(path string) (File, error)
	// SyncFiles makes the data of every file durable.
	SyncFiles(files []File) error
	SyncDir(dir string) error
	Rename(oldpath, newpath string) error
	Remove(path string) error
}

// OSOps is the real file system. SyncFiles uses one syncfs(2) for a batch
// of more than one file (one journal commit covers them all) and fsync for
// a single file.
type OSOps struct{}

// Create creates a file with owner-only permissions, set before any data.
func (OSOps) Create(path string) (File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
}

// OpenAppend opens a file for appending.
func (OSOps) OpenAppend(path string) (File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
}

// SyncFiles implements FileOps.
func (OSOps) SyncFiles(files []File) error {
	switch len(files) {
	case 0:
		return nil
	case 1:
		return files[0].Sync()
	}
	if err := unix.Syncfs(int(files[0].Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}

// SyncDir fsyncs a directory so renames and removals in it are durable.
func (OSOps) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Rename implements FileOps.
func (OSOps) Rename(o, n string) error { return os.Rename(o, n) }

// Remove implements FileOps.
func (OSOps) Remove(p string) error { return os.Remove(p) }

// idReserver hands out MIDs, reserving blocks on disk so ids stay unique
// across restarts without a write per message.
type idReserver struct {
	mu       sync.Mutex
	path     string
	ops      FileOps
	n        uint64
	reserved uint64
}

const idBlock = 10000

func openIDs(path string, ops FileOps) (*idReserver, error) {
	r := &idReserver{path: path, ops: ops, n: 1}
	if data, err := os.ReadFile(path); err == nil && len(data) == 8 {
		r.n = binary.BigEndian.Uint64(data)
	}
	r.reserved = r.n
	return r, nil
}

func (r *idReserver) next() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n >= r.reserved {
		r.reserve(r.n + idBlock)
	}
	id := r.n
	r.n++
	return id
}

func (r *idReserver) atLeast(n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n < n {
		r.n = n
	}
}

// reserve persists the new high-water mark; on failure ids still come from
// memory, and at the next start Recover raises the counter above every MID
// on disk, so uniqueness holds for every message that was accepted.
func (r *idReserver) reserve(upto uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], upto)
	tmp := r.path + ".tmp"
	r.ops.Remove(tmp) // a leftover from a crash would fail the exclusive create
	if f, err := r.ops.Create(tmp); err == nil {
		_, werr := f.Write(b[:])
		serr := r.ops.SyncFiles([]File{f})
		f.Close()
		// The rename must be durable too (directory fsync): else a power
		// loss brings back the old mark and MIDs already used are reused.
		if werr == nil && serr == nil && r.ops.Rename(tmp, r.path) == nil && r.ops.SyncDir(filepath.Dir(r.path)) == nil {
			r.reserved = upto
			return
		}
		r.ops.Remove(tmp)
	} else {
		os.Remove(tmp)
	}
	r.reserved = upto
}
