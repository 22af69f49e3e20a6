package webui

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// User is one administrator account.
type User struct {
	Name    string    `json:"name"`
	Hash    string    `json:"bcrypt"`
	Created time.Time `json:"created"`
}

// Users is the administrator file <dir>/users.json (mode 0600). It is read
// at every login, so accounts added with `outpost adminuser` work at once.
type Users struct {
	mu   sync.Mutex
	path string
	cost int // bcrypt work factor of new hashes
	// dummy keeps the time of a login for an unknown name close to that
	// of a wrong password; made at the first use.
	dummy func() []byte
}

// MinPasswordLength is the shortest password adminuser accepts.
const MinPasswordLength = 8

// bcryptCost is bcrypt's work factor for new hashes (the library's
// default, 2^10 rounds); a stored hash keeps the cost it was made with.
const bcryptCost = bcrypt.DefaultCost

var userNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ErrNoUser is returned for an unknown account.
var ErrNoUser = errors.New("no such administrator")

// OpenUsers returns the user file in dir (created on the first Add).
func OpenUsers(dir string) *Users {
	u := &Users{path: filepath.Join(dir, "users.json"), cost: bcryptCost}
	u.dummy = sync.OnceValue(func() []byte {
		h, _ := bcrypt.GenerateFromPassword([]byte("outpost-no-such-user"), u.cost)
		return h
	})
	return u
}

// Path is the users file.
func (u *Users) Path() string { return u.path }

func (u *Users) load() ([]User, error) {
	b, err := os.ReadFile(u.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("administrators: %w", err)
	}
	var f struct{ Users []User }
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("administrators: %s: %w", u.path, err)
	}
	return f.Users, nil
}

func (u *Users) save(list []User) error {
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := json.MarshalIndent(struct {
		Users []User `json:"users"`
	}{list}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(u.path), 0o700); err != nil {
		return fmt.Errorf("administrators: %w", err)
	}
	tmp := u.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("administrators: %w", err)
	}
	if _, err = f.Write(append(b, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, u.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("administrators: %w", err)
	}
	return nil
}

// List returns the accounts, sorted by name.
func (u *Users) List() ([]User, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.load()
}

// Add creates an account, or sets the password of an existing one
// (replaced reports which).
func (u *Users) Add(name, password string) (replaced bool, err error) {
	if !userNameRE.MatchString(name) {
		return false, fmt.Errorf("%q is not a valid administrator name (letters, digits, . _ @ -; at most 64)", name)
	}
	if len(password) < MinPasswordLength {
		return false, fmt.Errorf("the password must have at least %d characters", MinPasswordLength)
	}
	if len(password) > 72 {
		return false, errors.New("the password must have at most 72 bytes (bcrypt's limit)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), u.cost)
	if err != nil {
		return false, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	list, err := u.load()
	if err != nil {
		return false, err
	}
	for i := range list {
		if list[i].Name == name {
			list[i].Hash = string(h)
			return true, u.save(list)
		}
	}
	return false, u.save(append(list, User{Name: name, Hash: string(h), Created: time.Now().UTC()}))
}

// Delete removes an account.
func (u *Users) Delete(name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	list, err := u.load()
	if err != nil {
		return err
	}
	for i := range list {
		if list[i].Name == name {
			return u.save(append(list[:i], list[i+1:]...))
		}
	}
	return fmt.Errorf("%w: %s", ErrNoUser, name)
}

// Verify reports whether name/password is a valid account.
func (u *Users) Verify(name, password string) bool {
	list, err := u.List()
	if err != nil {
		return false
	}
	for _, us := range list {
		if us.Name == name {
			return bcrypt.CompareHashAndPassword([]byte(us.Hash), []byte(password)) == nil
		}
	}
	bcrypt.CompareHashAndPassword(u.dummy(), []byte(password))
	return false
}
