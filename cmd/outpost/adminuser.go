package main

// outpost adminuser: the web UI's administrator accounts, kept in
// <data_dir>/webui/users.json (mode 0600, bcrypt hashes). The running
// daemon reads the file at every login, so changes need no restart.
//
//	outpost adminuser add NAME [--password-stdin]
//	outpost adminuser list
//	outpost adminuser delete NAME

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"outpost/internal/webui"
)

const adminuserUsage = `usage: outpost adminuser add NAME [--password-stdin]
       outpost adminuser list
       outpost adminuser delete NAME
`

func adminuserCmd(cfgPath string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, adminuserUsage)
		return 2
	}
	op, args := args[0], args[1:]
	fromStdin := false
	var names []string
	for _, a := range args {
		switch {
		case a == "--password-stdin" && op == "add":
			fromStdin = true
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "outpost: adminuser: unknown flag %s\n%s", a, adminuserUsage)
			return 2
		default:
			names = append(names, a)
		}
	}
	if (op == "list" && len(names) != 0) || (op != "list" && len(names) != 1) {
		fmt.Fprint(stderr, adminuserUsage)
		return 2
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	users := webui.OpenUsers(webui.Dir(cfg.DataDir))
	fail := func(err error) int {
		fmt.Fprintln(stderr, "outpost: adminuser:", err)
		return 1
	}
	switch op {
	case "add":
		var pw string
		if fromStdin {
			pw, err = readPasswordLine(stdin)
		} else {
			pw, err = promptNewPassword(stdin, stderr)
		}
		if err != nil {
			return fail(err)
		}
		replaced, err := users.Add(names[0], pw)
		if err != nil {
			return fail(err)
		}
		if err := followOwner(cfg.DataDir, webui.Dir(cfg.DataDir), users.Path()); err != nil {
			return fail(err)
		}
		if replaced {
			fmt.Fprintf(stdout, "Password of administrator %s changed.\n", names[0])
		} else {
			fmt.Fprintf(stdout, "Administrator %s added (%s).\n", names[0], users.Path())
		}
	case "list":
		list, err := users.List()
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED")
		for _, u := range list {
			fmt.Fprintf(tw, "%s\t%s\n", u.Name, u.Created.Local().Format(time.DateTime))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d administrator(s)\n", len(list))
	case "delete":
		if err := users.Delete(names[0]); err != nil {
			return fail(err)
		}
		if err := followOwner(cfg.DataDir, users.Path()); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "Administrator %s deleted.\n", names[0])
	default:
		fmt.Fprint(stderr, adminuserUsage)
		return 2
	}
	return 0
}

// followOwner gives paths to the owner of the data directory when root
// runs adminuser, so that a daemon that dropped its privileges (user:)
// can still read the users file.
func followOwner(dataDir string, paths ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give %s to the data directory's owner: %w", p, err)
		}
	}
	return nil
}

// readPasswordLine reads one line (for --password-stdin).
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", errors.New("no password on standard input")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// promptNewPassword asks twice on the terminal with echo off.
func promptNewPassword(stdin io.Reader, prompt io.Writer) (string, error) {
	f, ok := stdin.(*os.File)
	if !ok {
		return "", errors.New("standard input is not a terminal: use --password-stdin")
	}
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", errors.New("standard input is not a terminal: use --password-stdin")
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", fmt.Errorf("terminal: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	in := bufio.NewReader(f)
	ask := func(q string) (string, error) {
		fmt.Fprint(prompt, q)
		line, err := in.ReadString('\n')
		fmt.Fprintln(prompt)
		if err != nil {
			return "", errors.New("no password entered")
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", err
	}
	again, err := ask("Retype the password: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("the passwords do not match")
	}
	return pw, nil
}
