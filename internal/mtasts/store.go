package mtasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Entry is one cached policy, keyed by policy domain.
type Entry struct {
	Domain    string    `json:"domain"`
	ID        string    `json:"id"`  // the TXT id the policy was fetched under
	Raw       string    `json:"raw"` // the policy body as served
	Policy    *Policy   `json:"policy"`
	FetchedAt time.Time `json:"fetched_at"`
	Expires   time.Time `json:"expires"` // FetchedAt + max_age
}

// Valid reports whether the entry may still be applied at now (RFC 8461
// §3.2 max_age: cache "for up to this value from the last policy fetch
// time").
func (e *Entry) Valid(now time.Time) bool { return e != nil && now.Before(e.Expires) }

// ErrNoEntry is returned by Store.Get and Manager.Show for a domain with
// nothing cached.
var ErrNoEntry = errors.New("no cached MTA-STS policy")

// Store persists cached policies so that they survive restarts. It is a
// small interface so that a shared store (Redis, PostgreSQL) can replace
// the embedded one for several nodes. Implementations are safe for
// concurrent use.
type Store interface {
	// Get returns the entry for domain, or ErrNoEntry.
	Get(ctx context.Context, domain string) (*Entry, error)
	// Put stores e, replacing any entry for e.Domain.
	Put(ctx context.Context, e *Entry) error
	// Delete removes domain's entry; deleting nothing is not an error.
	Delete(ctx context.Context, domain string) error
	// List returns every entry, sorted by domain.
	List(ctx context.Context) ([]*Entry, error)
}

// StoreFileName is the bbolt file OpenBoltStore creates in the data
// directory.
const StoreFileName = "mta-sts.db"

var boltBucket = []byte("mta-sts-policies")

// BoltStore is the embedded Store: one bbolt file in the data directory,
// one key per policy domain, the value the JSON-encoded Entry. bbolt
// commits are fsynced, so a Put that returned survives a crash.
type BoltStore struct {
	db *bolt.DB
}

// OpenBoltStore opens (creating if needed) dataDir/mta-sts.db. The file is
// locked by one process at a time; a second opener fails after a second
// instead of hanging.
func OpenBoltStore(dataDir string) (*BoltStore, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("mta-sts cache directory: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dataDir, StoreFileName), 0o640, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open mta-sts cache: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open mta-sts cache: %w", err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// Get implements Store.
func (s *BoltStore) Get(_ context.Context, domain string) (*Entry, error) {
	var e *Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(boltBucket).Get([]byte(domain))
		if v == nil {
			return ErrNoEntry
		}
		var err error
		e, err = decodeEntry(v)
		return err
	})
	return e, err
}

// Put implements Store.
func (s *BoltStore) Put(_ context.Context, e *Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode mta-sts cache entry: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Put([]byte(e.Domain), v) })
}

// Delete implements Store.
func (s *BoltStore) Delete(_ context.Context, domain string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Delete([]byte(domain)) })
}

// List implements Store. An undecodable value is skipped, not fatal: the
// domain will simply be fetched again.
func (s *BoltStore) List(_ context.Context) ([]*Entry, error) {
	var out []*Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).ForEach(func(k, v []byte) error {
			if e, err := decodeEntry(v); err == nil {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err // bbolt iterates in key order
}

// decodeEntry decodes a stored entry and re-parses its raw policy: the raw
// text is authoritative, so a value written by an older parser is judged by
// today's.
func decodeEntry(v []byte) (*Entry, error) {
	var e Entry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("decode mta-sts cache entry: %w", err)
	}
	p, err := ParsePolicy(e.Raw)
	if err != nil {
		return nil, fmt.Errorf("cached policy for %s: %w", e.Domain, err)
	}
	e.Policy = p
	return &e, nil
}

// MemStore is a Store in memory only (no data directory; tests).
type MemStore struct {
	mu sync.Mutex
	m  map[string]Entry
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{m: map[string]Entry{}} }

// Get implements Store.
func (s *MemStore) Get(_ context.Context, domain string) (*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[domain]
	if !ok {
		return nil, ErrNoEntry
	}
	return &e, nil
}

// Put implements Store.
func (s *MemStore) Put(_ context.Context, e *Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[e.Domain] = *e
	return nil
}

// Delete implements Store.
func (s *MemStore) Delete(_ context.Context, domain string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, domain)
	return nil
}

// List implements Store.
func (s *MemStore) List(_ context.Context) ([]*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Entry, 0, len(s.m))
	for _, e := range s.m {
		out = append(out, &e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}
