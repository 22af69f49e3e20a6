package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/ctl"
)

// resolveConfig loads the configuration the daemon runs: the --config
// file, else the committed file under the default data directory (created
// by the first commit made without --config), else the embedded defaults.
// It also returns the live file path that commits write.
func resolveConfig(cfgPath string) (*config.Config, string, error) {
	if cfgPath != "" {
		c, err := config.Load(cfgPath)
		return c, cfgPath, err
	}
	live := configstore.DefaultLivePath(config.DefaultDataDir)
	if _, err := os.Stat(live); err == nil {
		c, err := config.Load(live)
		return c, live, err
	}
	c, err := config.Parse(nil, "")
	return c, live, err
}

// openStore opens the configuration store for the CLI.
func openStore(cfgPath string) (*configstore.Store, *config.Config, error) {
	cfg, live, err := resolveConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	s, err := configstore.Open(live, cfg.DataDir)
	return s, cfg, err
}

// adminUser names who makes a change: the sudo user, else the login user.
func adminUser() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}

func socketPath(cfg *config.Config) string {
	if filepath.IsAbs(cfg.Control.Socket) {
		return cfg.Control.Socket
	}
	return filepath.Join(cfg.DataDir, cfg.Control.Socket)
}

// commitCmd: outpost commit -m "comment".
func commitCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	comment := ""
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "-m" && i+1 < len(args):
			comment = args[i+1]
			i++
		case strings.HasPrefix(args[i], "-m="):
			comment = strings.TrimPrefix(args[i], "-m=")
		default:
			fmt.Fprintln(stderr, `usage: outpost commit -m "comment describing your changes"`)
			return 2
		}
	}
	s, cfg, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if !s.HasPending() {
		fmt.Fprintln(stdout, "There are no changes to commit: no data to commit.")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c configstore.Commit
	err = ctl.Dial(socketPath(cfg)).DoJSON(ctx, "POST", "/v1/config/commit", map[string]string{"Comment": comment, "User": adminUser()}, &c)
	if errors.Is(err, ctl.ErrNotRunning) {
		// No daemon: commit the file; it is what the next start runs.
		var cp *configstore.Commit
		cp, err = s.Commit(comment, adminUser(), nil)
		if cp != nil {
			c = *cp
		}
		if err == nil {
			fmt.Fprintln(stdout, "Outpost is not running; the configuration takes effect when it starts.")
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "outpost: commit:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Changes committed (commit %d) at %s by %s.\n", c.ID, c.Time.Local().Format(time.DateTime), c.User)
	return 0
}

// rollbackCmd: outpost rollback [ID].
func rollbackCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	id := 0
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 1 {
			fmt.Fprintln(stderr, "usage: outpost rollback [COMMIT-ID]   (see outpost config history)")
			return 2
		}
		id = n
	}
	s, cfg, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c configstore.Commit
	err = ctl.Dial(socketPath(cfg)).DoJSON(ctx, "POST", "/v1/config/rollback", map[string]any{"ID": id, "User": adminUser()}, &c)
	if errors.Is(err, ctl.ErrNotRunning) {
		var cp *configstore.Commit
		cp, err = s.Rollback(id, adminUser(), nil)
		if cp != nil {
			c = *cp
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "outpost: rollback:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Rolled back to commit %d (new commit %d).\n", c.Rollback, c.ID)
	return 0
}

// clearCmd: outpost clear — abandon pending changes.
func clearCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	s, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if !s.HasPending() {
		fmt.Fprintln(stdout, "There are no pending changes.")
		return 0
	}
	if err := s.Clear(); err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	fmt.Fprintln(stdout, "Pending changes abandoned.")
	return 0
}

// configHistory: outpost config history [--diff].
func configHistory(cfgPath string, args []string, stdout, stderr io.Writer) int {
	s, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	h, err := s.History()
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	showDiff := len(args) > 0 && args[0] == "--diff"
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tUSER\tCOMMENT")
	for _, c := range h {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", c.ID, c.Time.Local().Format(time.DateTime), c.User, c.Comment)
		if showDiff && c.Diff != "" {
			tw.Flush()
			fmt.Fprint(stdout, indent(c.Diff))
		}
	}
	tw.Flush()
	return 0
}

// configDiff: outpost config diff — the pending changes.
func configDiff(cfgPath string, args []string, stdout, stderr io.Writer) int {
	s, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	d, err := s.Diff()
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if d == "" {
		fmt.Fprintln(stdout, "There are no pending changes.")
		return 0
	}
	fmt.Fprint(stdout, d)
	return 0
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}
