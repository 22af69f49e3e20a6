package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory and
// unmounts it when the test ends (after the daemon, which is registered
// later, has stopped). Without the right to mount it fails under CI and
// skips elsewhere.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a tmpfs (need root): %v %s", err, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s; lazy unmount", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fillTo writes a file in dir until at most keep bytes stay free.
func fillTo(t *testing.T, dir string, keep int64) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for freeBytes(t, dir) > keep {
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("filling %s: %v", dir, err)
		}
	}
	return p
}

// TestDiskBelowMinFreeRefusesAtMailFrom: with the default min_free_disk
// (64 MiB) above the size of the data directory's file system, MAIL FROM gets
// 452 4.3.1 and nothing is accepted.
func TestDiskBelowMinFreeRefusesAtMailFrom(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	w := newWorld(t, "127.0.0.9")
	rcv := w.addDomain(t, "full.test", "mx.full.test", "127.0.0.9", nil)
	w.d = startOutpost(t, mnt, baseConfig(w, ""))
	out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@full.test", "--header", "Message-Id: <full-a@sender.test>")
	if err == nil {
		t.Fatalf("swaks succeeded on a full disk:\n%s", out)
	}
	if !regexpMatch(`(?m)^ -> MAIL FROM:<a@sender\.test>\s*\n<\*\* 452 4\.3\.1 `, out) {
		t.Fatalf("MAIL FROM not refused with 452 4.3.1:\n%s", out)
	}
	if strings.Contains(out, "RCPT TO") || strings.Contains(out, "<-  250 2.0.0") {
		t.Fatalf("transaction went on after the 452:\n%s", out)
	}
	if q, _ := w.d.cli("queue", "list"); !strings.Contains(q, "0 message(s)") {
		t.Errorf("something was queued:\n%s", q)
	}
	if ents, _ := os.ReadDir(filepath.Join(mnt, "data", "spool", "msg")); len(ents) != 0 {
		t.Errorf("spool/msg holds %d file(s)", len(ents))
	}
	time.Sleep(500 * time.Millisecond)
	if rcv.count() != 0 {
		t.Errorf("a message was delivered")
	}
}

// TestDiskFullDuringDataGets451ThenRecovers: with min_free_disk: 1 the
// check at MAIL passes, but the message does not fit: the client gets
// 451 4.3.0 after DATA, never 250. Once space is freed the same message is
// accepted and delivered, and nothing else arrives.
func TestDiskFullDuringDataGets451ThenRecovers(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	w := newWorld(t, "127.0.0.10")
	rcv := w.addDomain(t, "full.test", "mx.full.test", "127.0.0.10", nil)
	w.d = startOutpost(t, mnt, strings.Replace(baseConfig(w, ""), "logs:\n", "logs:\n  min_free_disk: 1\n", 1))

	// A 1 MiB body (outside the tmpfs), bigger than what will be left.
	body := filepath.Join(t.TempDir(), "body.txt")
	line := strings.Repeat("x", 76) + "\n"
	if err := os.WriteFile(body, []byte(strings.Repeat(line, (1<<20)/len(line))), 0o600); err != nil {
		t.Fatal(err)
	}
	// Leave some room for the mail log, far less than the message.
	filler := fillTo(t, mnt, 192<<10)
	t.Logf("free on the data file system: %d bytes", freeBytes(t, mnt))

	send := func(id string) (string, error) {
		return swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@full.test",
			"--header", "Message-Id: <"+id+"@sender.test>", "--body", "@"+body, "--suppress-data")
	}
	out, err := send("full-b1")
	if err == nil || !regexpMatch(`(?m)^ -> \d+ lines sent\s*\n<\*\* 451 4\.3\.0 `, out) {
		t.Fatalf("a message bigger than the free space did not get 451 4.3.0 (err %v):\n%s", err, out)
	}
	for _, sub := range []string{"tmp", "msg"} {
		if ents, _ := os.ReadDir(filepath.Join(mnt, "data", "spool", sub)); len(ents) != 0 {
			t.Errorf("spool/%s holds %d file(s) after the failed write", sub, len(ents))
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	out, err = send("full-b2")
	if err != nil || !regexpMatch(`(?m)^ -> \d+ lines sent\s*\n<-  250 `, out) {
		t.Fatalf("after freeing space the message was not accepted (err %v):\n%s", err, out)
	}
	got := rcv.wait(t, 20*time.Second)
	if !strings.Contains(got.Data, "<full-b2@sender.test>") || len(got.Data) < 1<<20-1024 {
		t.Fatalf("delivered message is not the second one or is truncated (%d bytes)", len(got.Data))
	}
	// The mail log shares the file system: it must have survived ENOSPC.
	w.d.waitLog(`^Info: Message finished MID \d+ done$`, 10*time.Second)
	time.Sleep(time.Second)
	ids := rcv.byMessageID()
	if len(ids) != 1 || ids["<full-b2@sender.test>"] != 1 {
		t.Fatalf("sink received %v, want exactly one copy of <full-b2@sender.test>", ids)
	}
	if q, _ := w.d.cli("queue", "list"); !strings.Contains(q, "0 message(s)") {
		t.Errorf("queue not empty:\n%s", q)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
