package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestTailFollowsAndQueueBounce(t *testing.T) {
	w := newWorld(t, "127.0.0.9")
	senderBox := w.addDomain(t, "tsender.test", "mx.tsender.test", "127.0.0.9", nil)
	w.z.setServfail("hold.test")
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, ""))

	tail := exec.Command(binPath, "tail", "--config", w.d.cfgPath)
	stdout, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // let tail subscribe
	if out, err := swaks(t, w.d.smtp, "--from", "someone@tsender.test", "--to", "x@hold.test", "--header", "Subject: held"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	var mid int
	deadline := time.After(15 * time.Second)
	for mid == 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("tail ended")
			}
			if i := strings.Index(l, "Info: Delayed: DCID 0 MID "); i >= 0 {
				fmt.Sscanf(l[i:], "Info: Delayed: DCID 0 MID %d", &mid)
			}
		case <-deadline:
			t.Fatal("tail did not show the Delayed line")
		}
	}
	if out, err := w.d.cli("queue", "bounce", fmt.Sprint(mid)); err != nil || !strings.Contains(out, "bounced") {
		t.Fatalf("queue bounce: %v %s", err, out)
	}
	dsn := senderBox.wait(t, 20*time.Second)
	if dsn.From != "" || !strings.Contains(dsn.Data, "Action: failed") || !strings.Contains(dsn.Data, "Final-Recipient: rfc822; x@hold.test") {
		t.Fatalf("DSN after queue bounce:\n%s", dsn.Data)
	}
	w.d.waitLog(fmt.Sprintf(`^Info: Bounced: DCID 0 MID %d From: <someone@tsender\.test> To: <x@hold\.test> RID 0 - 5\.0\.0 - `, mid), 5*time.Second)
}
