package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMetricsAndQueueCLI(t *testing.T) {
	w := newWorld(t, "127.0.0.8")
	rcv := w.addDomain(t, "metrics.test", "mx.metrics.test", "127.0.0.8", nil)
	mport := freePortOn(t, "127.0.0.1")
	w.z.setServfail("stuck.test")
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, fmt.Sprintf("metrics:\n  address: 127.0.0.1:%d\n", mport)))
	if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@metrics.test"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	rcv.wait(t, 20*time.Second)
	if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@stuck.test"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	line := w.d.waitLog(`^Info: Delayed: DCID 0 MID \d+ From: <a@sender\.test> To: <u@stuck\.test>`, 10*time.Second)
	var mid int
	fmt.Sscanf(line, "Info: Delayed: DCID 0 MID %d", &mid)

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if strings.Contains(body, "outpost_recipients_delivered_total 1") {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{
		"outpost_recipients_delivered_total 1",
		"outpost_queue_messages 1",
		`outpost_tls_connections_total{mode="preferred",outcome="success"} 1`,
		"outpost_recipients_deferred_total",
		"outpost_queue_oldest_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	out, err := w.d.cli("queue", "show", fmt.Sprint(mid))
	if err != nil || !strings.Contains(out, `"state": "deferred"`) || !strings.Contains(out, "4.4.3") {
		t.Fatalf("queue show: %v\n%s", err, out)
	}
	if out, err := w.d.cli("queue", "flush"); err != nil || !strings.Contains(out, "scheduled for delivery now") {
		t.Fatalf("queue flush: %v\n%s", err, out)
	}
	if out, err := w.d.cli("queue", "delete", fmt.Sprint(mid)); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("queue delete: %v\n%s", err, out)
	}
	w.d.waitLog(fmt.Sprintf(`^Info: Message finished MID %d aborted$`, mid), 5*time.Second)
	if out, _ := w.d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Fatalf("queue not empty after delete:\n%s", out)
	}
	if out, err := w.d.cli("queue", "show", "999999"); err == nil || !strings.Contains(out, "not in the queue") {
		t.Fatalf("show of unknown MID: %v %s", err, out)
	}

	w.d.stop()
	raw, err := exec.Command(binPath, "queue", "list", "--config", w.d.cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(raw), "outpost is not running") {
		t.Fatalf("CLI without daemon: %v %s", err, raw)
	}
	if _, err := exec.Command(binPath, "tail", "--config", filepath.Join(w.d.dir, "outpost.yaml")).CombinedOutput(); err == nil {
		t.Fatal("tail without daemon succeeded")
	}
}

func TestConfigCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, "hostname: a.test\ndestinations:\n  default: {tls: preferred, mta_sts: true}\n")
	writeFile(t, bad, "hostname: a.test\nlisteners:\n  - address: 127.0.0.1:2525\n    relay_frm: [127.0.0.0/8]\n")
	out, err := exec.Command(binPath, "config", "check", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid") || !strings.Contains(string(out), "warning:") {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "--config", bad, "config", "check").CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+`: line 4: unknown key "relay_frm"`) {
		t.Fatalf("bad config: %v\n%s", err, out)
	}
}
