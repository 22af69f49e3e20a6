// Package configstore keeps Outpost's configuration as an administrator
// changes it: pending edits, commits with a comment and a user, the history
// of every commit, and rollback — the appliance's Submit → Commit model.
//
// The live configuration is one YAML file (the --config file, or
// <data_dir>/config/outpost.yaml when Outpost runs without --config). Edits
// from the CLI and the web UI go to <data_dir>/config/pending.yaml, and
// nothing changes in the running server until Commit. Commit validates the
// pending configuration through config.Parse — the same path the server
// loads with — writes it atomically over the live file, and calls apply
// (the running server's reload); if apply fails, the previous file is put
// back and the old configuration keeps running. Every commit is kept under
// <data_dir>/config/history with its time, user, comment and diff;
// Rollback commits an earlier one again (one of the last KeepRollback).
//
// All operations hold an exclusive lock on <data_dir>/config/lock, so the
// CLI, the web UI and the daemon never interleave writes.
package configstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"outpost/internal/config"
)

// KeepRollback is how many recent commits rollback can return to.
const KeepRollback = 10

// ErrNothingPending is returned by Commit when there is nothing to commit.
var ErrNothingPending = errors.New("there are no pending changes: no data to commit")

// Store is one configuration's store.
type Store struct {
	live string // the live config file
	dir  string // <data_dir>/config
}

// Commit describes one committed configuration.
type Commit struct {
	ID       int       `json:"id"`
	Time     time.Time `json:"time"`
	User     string    `json:"user"`
	Comment  string    `json:"comment"`
	Diff     string    `json:"diff"`
	Rollback int       `json:"rollback_of,omitempty"`
}

// DefaultLivePath is the live file used when Outpost runs without --config.
func DefaultLivePath(dataDir string) string { return filepath.Join(dataDir, "config", "outpost.yaml") }

// Open returns the store for the live file at livePath whose state lives
// under dataDir/config.
func Open(livePath, dataDir string) (*Store, error) {
	dir := filepath.Join(dataDir, "config")
	if err := os.MkdirAll(filepath.Join(dir, "history"), 0o700); err != nil {
		return nil, fmt.Errorf("config store: %w", err)
	}
	return &Store{live: livePath, dir: dir}, nil
}

// LivePath is the live configuration file.
func (s *Store) LivePath() string { return s.live }

func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("config store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("config store lock: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func (s *Store) pendingPath() string { return filepath.Join(s.dir, "pending.yaml") }

func readOpt(path string) ([]byte, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	return b, err == nil, err
}

// LiveYAML returns the live configuration text ("" when none exists: the
// embedded defaults apply).
func (s *Store) LiveYAML() ([]byte, error) {
	b, _, err := readOpt(s.live)
	return b, err
}

// Working returns the configuration edits apply to: the pending one if
// there is one, else the live one — raw (as written, without defaults).
func (s *Store) Working() (*config.Config, bool, error) {
	b, pending, err := readOpt(s.pendingPath())
	if err != nil {
		return nil, false, err
	}
	name := s.pendingPath()
	if !pending {
		if b, err = s.LiveYAML(); err != nil {
			return nil, false, err
		}
		name = s.live
	}
	raw, err := config.ParseRaw(b, name)
	return raw, pending, err
}

// Edit applies fn to the working configuration, validates the result and
// stores it as pending. A change that does not validate is refused whole
// with the validation error, and nothing is saved.
func (s *Store) Edit(fn func(raw *config.Config) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	raw, _, err := s.Working()
	if err != nil {
		return err
	}
	if err := fn(raw); err != nil {
		return err
	}
	data, err := config.Marshal(raw)
	if err != nil {
		return err
	}
	if _, err := config.Parse(data, "pending configuration"); err != nil {
		return err
	}
	return writeAtomic(s.pendingPath(), data)
}

// HasPending reports whether uncommitted changes exist.
func (s *Store) HasPending() bool {
	_, err := os.Stat(s.pendingPath())
	return err == nil
}

// Diff shows the pending changes against the live configuration.
func (s *Store) Diff() (string, error) {
	p, ok, err := readOpt(s.pendingPath())
	if err != nil || !ok {
		return "", err
	}
	l, err := s.LiveYAML()
	if err != nil {
		return "", err
	}
	return diff(normalise(l), normalise(p)), nil
}

// normalise re-marshals YAML so diffs compare content, not formatting.
func normalise(b []byte) string {
	raw, err := config.ParseRaw(b, "")
	if err != nil {
		return string(b)
	}
	out, err := config.Marshal(raw)
	if err != nil {
		return string(b)
	}
	return string(out)
}

// Clear abandons the pending changes.
func (s *Store) Clear() error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(s.pendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear pending changes: %w", err)
	}
	return nil
}

// Commit makes the pending configuration live: validate, write, apply;
// on failure the previous configuration stays live and pending is kept.
func (s *Store) Commit(comment, user string, apply func(*config.Config) error) (*Commit, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	p, ok, err := readOpt(s.pendingPath())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNothingPending
	}
	c, err := s.install(p, comment, user, 0, apply)
	if err != nil {
		return nil, err
	}
	os.Remove(s.pendingPath())
	return c, nil
}

// install validates data, writes it as the live file, applies it and
// records the commit; it restores the old file when apply fails.
func (s *Store) install(data []byte, comment, user string, rollbackOf int, apply func(*config.Config) error) (*Commit, error) {
	cfg, err := config.Parse(data, s.live)
	if err != nil {
		return nil, fmt.Errorf("commit refused, the configuration is not valid: %w", err)
	}
	old, hadOld, err := readOpt(s.live)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(s.live), 0o700); err != nil {
		return nil, err
	}
	if err := writeAtomic(s.live, data); err != nil {
		return nil, fmt.Errorf("write %s: %w", s.live, err)
	}
	if apply != nil {
		if err := apply(cfg); err != nil {
			if hadOld {
				writeAtomic(s.live, old)
			} else {
				os.Remove(s.live)
			}
			return nil, fmt.Errorf("commit refused, the running configuration is unchanged: %w", err)
		}
	}
	hist, _ := s.History()
	id := 1
	if len(hist) > 0 {
		id = hist[len(hist)-1].ID + 1
	}
	if len(hist) == 0 && hadOld {
		// Keep the configuration that was live before the first commit, so
		// that it can be rolled back to.
		if err := s.record(&Commit{ID: 1, Time: time.Now(), User: "system", Comment: "configuration before the first commit"}, old); err != nil {
			return nil, err
		}
		id = 2
	}
	c := &Commit{ID: id, Time: time.Now(), User: user, Comment: comment, Diff: diff(normalise(old), normalise(data)), Rollback: rollbackOf}
	if err := s.record(c, data); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Store) record(c *Commit, data []byte) error {
	base := filepath.Join(s.dir, "history", fmt.Sprintf("%06d", c.ID))
	if err := writeAtomic(base+".yaml", data); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	meta, _ := json.MarshalIndent(c, "", "  ")
	if err := writeAtomic(base+".json", meta); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// History lists every commit, oldest first.
func (s *Store) History() ([]Commit, error) {
	files, err := filepath.Glob(filepath.Join(s.dir, "history", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Commit
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var c Commit
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("history %s: %w", f, err)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Rollback makes commit id's configuration live again, as a new commit.
// id 0 means the commit before the latest. Only the last KeepRollback
// commits can be rolled back to. Pending changes are kept.
func (s *Store) Rollback(id int, user string, apply func(*config.Config) error) (*Commit, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	hist, err := s.History()
	if err != nil {
		return nil, err
	}
	if len(hist) < 2 && id == 0 {
		return nil, errors.New("there is no earlier configuration to roll back to")
	}
	if id == 0 {
		id = hist[len(hist)-2].ID
	}
	pos := -1
	for i, c := range hist {
		if c.ID == id {
			pos = i
		}
	}
	if pos < 0 {
		return nil, fmt.Errorf("no commit %d in the history", id)
	}
	if len(hist)-pos > KeepRollback {
		return nil, fmt.Errorf("commit %d is older than the last %d configurations", id, KeepRollback)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, "history", fmt.Sprintf("%06d.yaml", id)))
	if err != nil {
		return nil, err
	}
	return s.install(data, "rollback to commit "+strconv.Itoa(id), user, id, apply)
}

// writeAtomic writes data to path durably: temp file, fsync, rename,
// directory fsync.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// diff is a line diff (longest common subsequence) in unified style
// without hunk headers: "-" old lines, "+" new lines, two lines of context.
func diff(a, b string) string {
	x, y := splitLines(a), splitLines(b)
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte
		line string
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			ops = append(ops, op{' ', x[i]})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, op{'-', x[i]})
			i++
		default:
			ops = append(ops, op{'+', y[j]})
			j++
		}
	}
	var out strings.Builder
	for k, o := range ops {
		if o.kind == ' ' {
			near := false
			for d := -2; d <= 2; d++ {
				if k+d >= 0 && k+d < len(ops) && ops[k+d].kind != ' ' {
					near = true
				}
			}
			if !near {
				continue
			}
		}
		out.WriteByte(o.kind)
		out.WriteByte(' ')
		out.WriteString(o.line)
		out.WriteByte('\n')
	}
	return out.String()
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
