// Command outpost is the secure outbound email gateway: one binary with
// subcommands. Every subcommand accepts --config FILE before or after its
// name; without it the embedded defaults apply.
//
//	outpost serve                         run the gateway
//	outpost config check [FILE]           validate a configuration
//	outpost queue list|show MID|flush|delete MID|bounce MID
//	outpost tail                          follow the mail log
//	outpost mta-sts check DOMAIN [--json] check a domain's MTA-STS deployment
//	outpost mta-sts cache list|show|refresh|flush DOMAIN
//	outpost dig NAME [TYPE]               DNS through the configured resolvers
//	outpost tlsverify DOMAIN              STARTTLS to each MX under the profile
//	outpost dane check DOMAIN             DNSSEC/TLSA state and DANE check of each MX
//	outpost version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"outpost/internal/app"
	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/ctl"
	"outpost/internal/qmgr"
)

const usage = `usage: outpost [--config FILE] COMMAND [ARGS]

commands:
  serve                            run the gateway (embedded defaults without --config)
  config check [FILE]              validate a configuration file without starting
  config diff                      show the pending (uncommitted) changes
  config history [--diff]          list commits: time, user, comment (and diffs)
  commit -m "COMMENT"              make the pending changes live (no restart)
  clear                            abandon the pending changes
  rollback [ID]                    re-apply an earlier commit (default: the previous one)
  queue list                       list queued messages
  queue show MID                   show one message and its recipients
  queue flush                      retry every deferred message now
  queue delete MID                 remove a message without a bounce
  queue bounce MID                 bounce a message's pending recipients to its sender
  tail                             follow the mail log of the running daemon
  mta-sts check DOMAIN [--json]    check DOMAIN's MTA-STS deployment (TXT, policy, MX
                                   STARTTLS probes); exit 0 only if enforcing would deliver
  mta-sts cache list|show|refresh|flush DOMAIN
                                   the running daemon's MTA-STS policy cache
  dig NAME [A|AAAA|MX|TXT|TLSA]    look NAME up through the configured resolvers; shows the
                                   status and whether the answer was DNSSEC-validated (AD)
  tlsverify DOMAIN                 STARTTLS to each MX of DOMAIN under its destination
                                   profile: protocol, cipher, certificate, verdict
  dane check DOMAIN                DNSSEC state of DOMAIN's MX, address and TLSA records, then
                                   a DANE-authenticated STARTTLS to each MX (QUIT, no mail);
                                   exit 0 only on DANE SUCCESS
  explain ADDRESS|DOMAIN [--json] [--fetch]
                                   what would happen to mail for a destination and why:
                                   profile, route, DNS, MTA-STS, DANE, plan per host (read-only)
  destconfig [OP ...]              Destination Controls: interactive menu, or new|edit|delete|
                                   default|list|detail|clear|import|export|setup (pending until commit)
  smtproutes [OP ...]              SMTP routes: interactive, or new|edit|delete|print|clear|import|export
  bounceconfig [OP ...]            bounce profiles: interactive, or new|edit NAME key=value...|delete|list
  adminuser add NAME [--password-stdin] | list | delete NAME
                                   web UI administrators (<data_dir>/webui/users.json)
  version                          print the version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// splitArgs takes --config FILE (or --config=FILE, -c FILE) from anywhere
// in args and returns it with the remaining arguments.
func splitArgs(args []string) (cfgPath string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config" || a == "-c":
			if i+1 >= len(args) {
				return "", nil, errors.New("--config needs a file name")
			}
			cfgPath = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			cfgPath = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	return cfgPath, rest, nil
}

func loadConfig(path string) (*config.Config, error) {
	c, _, err := resolveConfig(path)
	return c, err
}

func run(args []string, stdout, stderr io.Writer) int {
	cfgPath, rest, err := splitArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 2
	}
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(rest) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "serve":
		return serve(cfgPath, stderr)
	case "commit":
		return commitCmd(cfgPath, rest, stdout, stderr)
	case "rollback":
		return rollbackCmd(cfgPath, rest, stdout, stderr)
	case "clear":
		return clearCmd(cfgPath, rest, stdout, stderr)
	case "config":
		if len(rest) > 0 && rest[0] == "history" {
			return configHistory(cfgPath, rest[1:], stdout, stderr)
		}
		if len(rest) > 0 && rest[0] == "diff" {
			return configDiff(cfgPath, rest[1:], stdout, stderr)
		}
		if len(rest) == 0 || rest[0] != "check" {
			fmt.Fprintln(stderr, "usage: outpost config check [FILE] | config history [--diff] | config diff")
			return 2
		}
		if len(rest) > 1 {
			cfgPath = rest[1]
		}
		if cfgPath == "" {
			fmt.Fprintln(stderr, "usage: outpost config check FILE")
			return 2
		}
		c, err := config.Load(cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "outpost: config check:", err)
			return 1
		}
		for _, w := range c.Warnings {
			fmt.Fprintln(stdout, "warning:", w)
		}
		fmt.Fprintf(stdout, "%s: configuration is valid\n", cfgPath)
		return 0
	case "queue":
		return queueCmd(cfgPath, rest, stdout, stderr)
	case "tail":
		c, code := client(cfgPath, stderr)
		if c == nil {
			return code
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := c.Tail(ctx, stdout); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
		return 0
	case "mta-sts":
		return mtastsCmd(cfgPath, rest, stdout, stderr)
	case "dig":
		return digCmd(cfgPath, rest, stdout, stderr)
	case "tlsverify":
		return tlsverifyCmd(cfgPath, rest, stdout, stderr)
	case "dane":
		return daneCmd(cfgPath, rest, stdout, stderr)
	case "explain":
		return explainCmd(cfgPath, rest, stdout, stderr)
	case "destconfig":
		return destconfigCmd(cfgPath, rest, os.Stdin, stdout, stderr)
	case "smtproutes":
		return smtproutesCmd(cfgPath, rest, os.Stdin, stdout, stderr)
	case "bounceconfig":
		return bounceconfigCmd(cfgPath, rest, os.Stdin, stdout, stderr)
	case "adminuser":
		return adminuserCmd(cfgPath, rest, os.Stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "outpost", version)
		return 0
	default:
		fmt.Fprintf(stderr, "outpost: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

// gcPercent is the daemon's garbage-collection target unless GOGC is set:
// its live heap is small (queued messages wait on disk), so collecting at
// +50% instead of Go's +100% keeps the resident set about a quarter
// smaller for about 1% more CPU (docs/performance.md).
const gcPercent = 50

func serve(cfgPath string, stderr io.Writer) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, nil)))
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cfg, live, err := resolveConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	for _, w := range cfg.Warnings {
		slog.Warn(w)
	}
	// user: bind the listeners as root, then run as that user before
	// anything is opened or accepted (internal/app/privdrop.go).
	var prebound map[string]net.Listener
	if cfg.User != "" {
		id, err := app.LookupIdentity(cfg.User)
		if err == nil && os.Geteuid() == 0 {
			prebound, err = app.BindListeners(cfg)
		}
		if err == nil {
			err = app.DropPrivileges(id, cfg.DataDir)
		}
		if err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
		slog.Info("running unprivileged", "user", id.Name, "uid", id.UID, "gid", id.GID)
	}
	a, err := app.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	a.UsePrebound(prebound)
	defer a.ClosePrebound()
	store, err := configstore.Open(live, cfg.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	a.UseStore(store)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	return 0
}

func client(cfgPath string, stderr io.Writer) (*ctl.Client, int) {
	cfg, _, err := resolveConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return nil, 1
	}
	sock := cfg.Control.Socket
	if !filepath.IsAbs(sock) {
		sock = filepath.Join(cfg.DataDir, sock)
	}
	return ctl.Dial(sock), 0
}

func queueCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: outpost queue list|show MID|flush|delete MID|bounce MID")
		return 2
	}
	c, code := client(cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	needMID := func() (uint64, bool) {
		if len(args) < 2 {
			fmt.Fprintf(stderr, "usage: outpost queue %s MID\n", args[0])
			return 0, false
		}
		mid, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "outpost: %q is not a MID\n", args[1])
			return 0, false
		}
		return mid, true
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	switch args[0] {
	case "list":
		var list []qmgr.Info
		if err := c.Do(ctx, "GET", "/v1/queue", &list); err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MID\tARRIVED\tSIZE\tFROM\tRECIPIENTS\tSTATE")
		for _, m := range list {
			var pend []string
			state := "active"
			for _, r := range m.Recipients {
				if r.State == "active" || r.State == "deferred" {
					pend = append(pend, r.Addr)
					if r.State == "deferred" {
						state = "deferred"
					}
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t<%s>\t%s\t%s\n", m.MID, m.Arrived.Local().Format(time.DateTime), m.Size, m.From, strings.Join(pend, ","), state)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d message(s)\n", len(list))
	case "show":
		mid, ok := needMID()
		if !ok {
			return 2
		}
		var in qmgr.Info
		if err := c.Do(ctx, "GET", fmt.Sprintf("/v1/queue/%d", mid), &in); err != nil {
			return fail(err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(in)
	case "flush":
		var out map[string]int
		if err := c.Do(ctx, "POST", "/v1/queue/flush", &out); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%d deferred message(s) scheduled for delivery now\n", out["flushed"])
	case "delete", "bounce":
		mid, ok := needMID()
		if !ok {
			return 2
		}
		if err := c.Do(ctx, "POST", fmt.Sprintf("/v1/queue/%d/%s", mid, args[0]), nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "MID %d %s\n", mid, map[string]string{"delete": "deleted", "bounce": "bounced"}[args[0]])
	default:
		fmt.Fprintln(stderr, "usage: outpost queue list|show MID|flush|delete MID|bounce MID")
		return 2
	}
	return 0
}
