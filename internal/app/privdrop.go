package app

// Running unprivileged (docs/hardening.md).
//
// With the configuration key `user:` set and Outpost started as root,
// `outpost serve` binds every SMTP listener first (ports below 1024 need
// root or CAP_NET_BIND_SERVICE), makes the data directory belong to that
// user, and then switches the whole process — every thread — to the user's
// uid and gid with no supplementary groups but the user's own. Only then is
// the spool opened and the first connection accepted: no mail is ever
// received, stored or delivered with root privileges. The sockets bound as
// root are handed to the listeners through UsePrebound.
//
// After the switch the process cannot bind a port below 1024 again: a
// committed change to such a listener's settings (which restarts that
// listener) or a new privileged listener address needs a restart of the
// service. Under the shipped systemd unit (deploy/outpost.service) the
// process runs as the user from the start and keeps CAP_NET_BIND_SERVICE,
// so commits can rebind; `user:` is then left unset.

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"outpost/internal/config"
)

// BindListeners binds the address of every configured listener and returns
// the sockets by address, for UsePrebound. On error, nothing stays bound.
func BindListeners(cfg *config.Config) (map[string]net.Listener, error) {
	out := map[string]net.Listener{}
	for _, l := range cfg.Listeners {
		if _, dup := out[l.Address]; dup {
			continue
		}
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", l.Address, err)
		}
		out[l.Address] = ln
	}
	return out, nil
}

// UsePrebound gives the App sockets bound earlier (by BindListeners, before
// a privilege drop); a listener whose address is among them serves that
// socket instead of binding its own. Each socket is used once.
func (a *App) UsePrebound(ls map[string]net.Listener) {
	a.preMu.Lock()
	defer a.preMu.Unlock()
	a.prebound = ls
}

// takePrebound returns (and forgets) the socket bound earlier for addr.
func (a *App) takePrebound(addr string) net.Listener {
	a.preMu.Lock()
	defer a.preMu.Unlock()
	ln := a.prebound[addr]
	delete(a.prebound, addr)
	return ln
}

// ClosePrebound closes sockets that no listener took.
func (a *App) ClosePrebound() {
	a.preMu.Lock()
	defer a.preMu.Unlock()
	for k, ln := range a.prebound {
		ln.Close()
		delete(a.prebound, k)
	}
}

// Identity is the user Outpost runs as after DropPrivileges.
type Identity struct {
	Name     string
	UID, GID int
}

// LookupIdentity resolves a user name (or numeric uid) to its uid and
// primary gid.
func LookupIdentity(name string) (Identity, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return Identity{}, fmt.Errorf("user %q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return Identity{}, fmt.Errorf("user %q: non-numeric uid/gid %s/%s", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return Identity{}, fmt.Errorf("user %q is root: name an unprivileged user", name)
	}
	return Identity{Name: name, UID: uid, GID: gid}, nil
}

// DropPrivileges switches the process to id: it creates dataDir (0700) if
// needed and gives it, and everything under it not already theirs, to id
// (symbolic links are not followed), then sets the supplementary groups to
// id's gid alone, the gid, and the uid. On Linux the Go runtime applies
// setgroups/setgid/setuid to every thread. It then checks that root cannot
// be regained. Called by a process that is not root, it succeeds only when
// the process already runs as id.
func DropPrivileges(id Identity, dataDir string) error {
	if os.Geteuid() != 0 {
		if os.Geteuid() == id.UID && os.Getuid() == id.UID {
			return nil
		}
		return fmt.Errorf("user: %s is configured, but Outpost runs as uid %d: start it as root (it binds, then drops to %s) or as %s", id.Name, os.Geteuid(), id.Name, id.Name)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == id.UID && int(st.Gid) == id.GID {
			return nil
		}
		return os.Lchown(p, id.UID, id.GID)
	})
	if err != nil {
		return fmt.Errorf("give the data directory to %s: %w", id.Name, err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := syscall.Setgroups([]int{id.GID}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(id.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", id.GID, err)
	}
	if err := syscall.Setuid(id.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", id.UID, err)
	}
	if os.Getuid() != id.UID || os.Geteuid() != id.UID || os.Getgid() != id.GID || os.Getegid() != id.GID {
		return fmt.Errorf("privilege drop to %s did not take: uid %d euid %d gid %d egid %d", id.Name, os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
	}
	if err := syscall.Setuid(0); err == nil {
		return errors.New("privilege drop: root could be regained")
	}
	return nil
}
