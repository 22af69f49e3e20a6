package maillog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// prefixRE is the ctime prefix and level of every line (docs/mail_logs.md).
var prefixRE = regexp.MustCompile(`^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} (Critical|Warning|Info|Debug|Trace): `)

// strip checks each line's prefix and returns the lines as "Level: text".
func strip(t *testing.T, out string) []string {
	t.Helper()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("output does not end in a newline: %q", out)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := prefixRE.FindStringSubmatchIndex(line)
		if m == nil {
			t.Errorf("line without the ctime prefix: %q", line)
			continue
		}
		lines = append(lines, line[m[2]:])
	}
	return lines
}

func TestEvents(t *testing.T) {
	next := time.Date(2026, 3, 7, 9, 5, 0, 0, time.UTC)
	tests := []struct {
		name string
		log  func(l *Logger)
		want string
	}{
		{"NewICID", func(l *Logger) { l.NewICID(1, "Main", "10.0.0.1", "10.1.2.3", "mail.corp.example", true) },
			"Info: New SMTP ICID 1 interface Main (10.0.0.1) address 10.1.2.3 reverse dns host mail.corp.example verified yes"},
		{"NewICID unknown rdns", func(l *Logger) { l.NewICID(2, "Main", "10.0.0.1", "10.1.2.4", "", false) },
			"Info: New SMTP ICID 2 interface Main (10.0.0.1) address 10.1.2.4 reverse dns host (unknown) verified no"},
		{"ICIDPolicy", func(l *Logger) { l.ICIDPolicy(1, "RELAY", "RELAYLIST", "10.1.0.0/16") },
			"Info: ICID 1 RELAY SG RELAYLIST match 10.1.0.0/16"},
		{"ICIDTLS success", func(l *Logger) { l.ICIDTLS(1, true, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "") },
			"Info: ICID 1 TLS success protocol TLSv1.3 cipher TLS_AES_128_GCM_SHA256"},
		{"ICIDTLS failed", func(l *Logger) { l.ICIDTLS(1, false, "", "", "handshake failure") },
			"Info: ICID 1 TLS failed: handshake failure"},
		{"ICIDClose", func(l *Logger) { l.ICIDClose(1) }, "Info: ICID 1 close"},
		{"ICIDReceivingFailed", func(l *Logger) { l.ICIDReceivingFailed(1, "Message size exceeds limit") },
			"Info: ICID 1 Receiving Failed: Message size exceeds limit"},
		{"StartMID", func(l *Logger) { l.StartMID(5444, 1) }, "Info: Start MID 5444 ICID 1"},
		{"MIDFrom", func(l *Logger) { l.MIDFrom(5444, 1, "alice@corp.example") },
			"Info: MID 5444 ICID 1 From: <alice@corp.example>"},
		{"MIDFrom null", func(l *Logger) { l.MIDFrom(5445, 1, "") }, "Info: MID 5445 ICID 1 From: <>"},
		{"MIDTo", func(l *Logger) { l.MIDTo(5444, 1, 0, "bob@example.com") },
			"Info: MID 5444 ICID 1 RID 0 To: <bob@example.com>"},
		{"MIDRcptRejected", func(l *Logger) { l.MIDRcptRejected(5444, 1, "x@y.example", "RAT") },
			"Info: MID 5444 ICID 1 To: <x@y.example> Rejected by RAT"},
		{"MIDMessageID", func(l *Logger) { l.MIDMessageID(5444, "<q1@corp.example>") },
			"Info: MID 5444 Message-ID '<q1@corp.example>'"},
		{"MIDSubject quoted", func(l *Logger) { l.MIDSubject(5444, "Bob's\tnumbers") },
			`Info: MID 5444 Subject 'Bob\'s numbers'`},
		{"MIDReady", func(l *Logger) { l.MIDReady(5444, 4096, "alice@corp.example") },
			"Info: MID 5444 ready 4096 bytes from <alice@corp.example>"},
		{"MIDQueued", func(l *Logger) { l.MIDQueued(5444) }, "Info: MID 5444 queued for delivery"},
		{"MIDAborted", func(l *Logger) { l.MIDAborted(5446, "Receiving aborted by sender") },
			"Info: Message aborted MID 5446 Receiving aborted by sender"},
		{"NewDCID", func(l *Logger) { l.NewDCID(77, "Main", "192.0.2.25", 25) },
			"Info: New SMTP DCID 77 interface Main address 192.0.2.25 port 25"},
		{"DCIDTLSSuccess", func(l *Logger) { l.DCIDTLSSuccess(77, "TLSv1.3", "TLS_AES_256_GCM_SHA384") },
			"Info: DCID 77 TLS success protocol TLSv1.3 cipher TLS_AES_256_GCM_SHA384"},
		{"DCIDTLSFailed", func(l *Logger) { l.DCIDTLSFailed(77, "STARTTLS not offered") },
			"Info: DCID 77 TLS failed: STARTTLS not offered"},
		{"DCIDTLSDeferring", func(l *Logger) { l.DCIDTLSDeferring(77, "certificate has expired") },
			"Info: DCID 77 TLS deferring: certificate has expired"},
		{"DCIDTLSVerifyFailedContinuing", func(l *Logger) { l.DCIDTLSVerifyFailedContinuing(77, "unknown authority") },
			"Info: DCID 77 TLS verification failed, continuing with encrypted connection: unknown authority"},
		{"DCIDTLSRequired", func(l *Logger) { l.DCIDTLSRequired(77) },
			"Info: DCID 77 TLS was required but could not be successfully negotiated"},
		{"DCIDPlaintextFallback", func(l *Logger) { l.DCIDPlaintextFallback(77, "handshake failure") },
			"Info: DCID 77 TLS not negotiated, delivering in plaintext on a new connection: handshake failure"},
		{"DeliveryStart", func(l *Logger) { l.DeliveryStart(77, 5444, []int{0}) },
			"Info: Delivery start DCID 77 MID 5444 to RID [0]"},
		{"DeliveryStart several", func(l *Logger) { l.DeliveryStart(77, 5444, []int{0, 2, 3}) },
			"Info: Delivery start DCID 77 MID 5444 to RID [0, 2, 3]"},
		{"MessageDone", func(l *Logger) { l.MessageDone(77, 5444, []int{0, 1}) },
			"Info: Message done DCID 77 MID 5444 to RID [0, 1]"},
		{"Response", func(l *Logger) { l.Response(5444, []int{0}, "2.0.0 Ok: queued as 4F2B8") },
			"Info: MID 5444 RID [0] Response '2.0.0 Ok: queued as 4F2B8'"},
		{"Delayed", func(l *Logger) {
			l.Delayed(77, 5444, "alice@corp.example", "bob@example.com", 0, "4.2.2", "452", "Mailbox full")
		}, "Info: Delayed: DCID 77 MID 5444 From: <alice@corp.example> To: <bob@example.com> RID 0 - 4.2.2 - Mailbox full ('452', ['Mailbox full'])"},
		{"Bounced", func(l *Logger) {
			l.Bounced(77, 5444, "alice@corp.example", "bob@example.com", 1, "5.1.1", "550", "5.1.1 No such user")
		}, "Info: Bounced: DCID 77 MID 5444 From: <alice@corp.example> To: <bob@example.com> RID 1 - 5.1.1 - Bad destination mailbox address ('550', ['5.1.1 No such user'])"},
		{"Bounced unknown code", func(l *Logger) {
			l.Bounced(0, 5444, "alice@corp.example", "bob@example.com", 1, "5.9.9", "554", "no")
		}, "Info: Bounced: DCID 0 MID 5444 From: <alice@corp.example> To: <bob@example.com> RID 1 - 5.9.9 - Other permanent failure ('554', ['no'])"},
		{"Pending", func(l *Logger) { l.Pending(5444, []int{0}, next, "Default") },
			"Info: MID 5444 to RID [0] pending till Sat Mar  7 09:05:00 2026 [Default]"},
		{"MessageFinished", func(l *Logger) { l.MessageFinished(5444, "done") }, "Info: Message finished MID 5444 done"},
		{"BounceGenerated", func(l *Logger) { l.BounceGenerated(5447, 5444) },
			"Info: MID 5447 was generated for bounce of MID 5444"},
		{"DCIDClose", func(l *Logger) { l.DCIDClose(77) }, "Info: DCID 77 close"},
		{"ConnectionError", func(l *Logger) { l.ConnectionError(78, "192.0.2.26", "timeout", "connect") },
			"Info: Connection Error: DCID: 78 IP: 192.0.2.26 details: timeout reason: connect"},
		{"DNSQuery", func(l *Logger) { l.DNSQuery("_mta-sts.example.com", "TXT") },
			"Debug: DNS query: Q(_mta-sts.example.com, 'TXT')"},
		{"DNSTemporaryFailure", func(l *Logger) { l.DNSTemporaryFailure("example.com", "MX", "SERVFAIL") },
			"Info: DNS Temporary Failure example.com MX - SERVFAIL"},
		{"DNSHardError", func(l *Logger) { l.DNSHardError("nowhere.example", "MX", "NXDOMAIN") },
			"Info: DNS Hard Error looking up nowhere.example (MX): NXDOMAIN"},
		{"Infof", func(l *Logger) { l.Infof("free %s", "text") }, "Info: free text"},
		{"Warnf", func(l *Logger) { l.Warnf("disk %d%% full", 91) }, "Warning: disk 91% full"},
		{"Debugf", func(l *Logger) { l.Debugf("x") }, "Debug: x"},
		{"Log Critical", func(l *Logger) { l.Log(Critical, "spool unwritable") }, "Critical: spool unwritable"},
		{"multi-line reply stays one line", func(l *Logger) { l.DCIDTLSFailed(77, "line one\r\nline two") },
			"Info: DCID 77 TLS failed: line one  line two"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := NewWriter(&buf, Trace)
			tt.log(l)
			got := strip(t, buf.String())
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestQuoteTruncates(t *testing.T) {
	var buf bytes.Buffer
	l := NewWriter(&buf, Info)
	l.MIDSubject(1, strings.Repeat("s", 600))
	got := strip(t, buf.String())
	if want := "Info: MID 1 Subject '" + strings.Repeat("s", 500) + "'"; len(got) != 1 || got[0] != want {
		t.Errorf("got %q", got)
	}
}

func TestDescribe(t *testing.T) {
	for code, want := range map[string]string{
		"5.1.1": "Bad destination mailbox address",
		"4.4.7": "Delivery time expired",
		"4.7.5": "Cryptographic failure",
		"4.9.9": "Other temporary failure",
		"5.9.9": "Other permanent failure",
		"":      "Unknown error",
		"2.0.0": "Unknown error",
	} {
		if got := Describe(code); got != want {
			t.Errorf("Describe(%q) = %q, want %q", code, got, want)
		}
	}
}

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	l := NewWriter(&buf, Info)
	l.Log(Critical, "c")
	l.Log(Warning, "w")
	l.Log(Info, "i")
	l.Log(Debug, "d")
	l.Log(Trace, "t")
	l.DNSQuery("example.com", "MX") // Debug
	want := []string{"Critical: c", "Warning: w", "Info: i"}
	if got := strip(t, buf.String()); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	if !l.Enabled(Info) || l.Enabled(Debug) {
		t.Error("Enabled disagrees with the level")
	}

	for in, want := range map[string]Level{"critical": Critical, "WARNING": Warning, "Info": Info,
		"information": Info, "debug": Debug, "trace": Trace} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("verbose"); err == nil {
		t.Error("ParseLevel(verbose) succeeded")
	}
	if (Options{}).Level != Info {
		t.Error("the zero Options does not log at Info")
	}
	if Level(42).String() != "Info" || Warning.String() != "Warning" {
		t.Error("Level.String")
	}
}

// clock is a fake time source safe for the flusher goroutine.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var rolledRE = regexp.MustCompile(`^mail\.@\d{8}T\d{6}\.\d{6}\.s$`)

// rolled lists rolled-over files, oldest first.
func rolled(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		switch {
		case e.Name() == CurrentName:
		case rolledRE.MatchString(e.Name()):
			out = append(out, e.Name())
		default:
			t.Errorf("unexpected file %s", e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strip(t, string(b))
}

func TestRolloverBySize(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC)}
	l, err := Open(dir, Options{MaxSize: 300, Keep: 3, FlushInterval: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	// Each line is 25 (prefix) + "Info: " + 70 octets + LF ≈ 100: three lines a file.
	for i := range 20 {
		l.Infof("line %02d %s", i, strings.Repeat("x", 62))
		clk.Advance(time.Second)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := rolled(t, dir)
	if len(files) != 3 {
		t.Fatalf("rolled files %v, want Keep=3 of them", files)
	}
	var all []string
	for _, f := range files {
		lines := readLines(t, filepath.Join(dir, f))
		if len(lines) != 3 {
			t.Errorf("%s holds %d lines, want 3", f, len(lines))
		}
		all = append(all, lines...)
	}
	all = append(all, readLines(t, filepath.Join(dir, CurrentName))...)
	// The newest lines survive, in order: 20 lines, 18 rolled (6 files), 3 files kept.
	if len(all) != 11 {
		t.Fatalf("%d lines kept, want 11: %q", len(all), all)
	}
	for i, line := range all {
		if want := fmt.Sprintf("Info: line %02d ", 9+i); !strings.HasPrefix(line, want) {
			t.Errorf("line %d = %q, want prefix %q", i, line, want)
		}
	}
}

// Two rollovers within one clock tick must not overwrite each other.
func TestRolloverSameInstant(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC)}
	l, err := Open(dir, Options{Keep: 10, FlushInterval: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		l.Infof("before rollover %d", i)
		l.Rollover()
	}
	files := rolled(t, dir)
	if len(files) != 3 {
		t.Fatalf("rolled files %v, want 3", files)
	}
	for i, f := range files {
		if got := readLines(t, filepath.Join(dir, f)); len(got) != 1 || got[0] != fmt.Sprintf("Info: before rollover %d", i) {
			t.Errorf("%s = %q", f, got)
		}
	}
	if files[0] != "mail.@20260307T090000.000000.s" {
		t.Errorf("first name %s", files[0])
	}
}

func TestRolloverByAge(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC)}
	l, err := Open(dir, Options{MaxAge: time.Hour, FlushInterval: time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clk.Advance(2 * time.Hour)
	time.Sleep(20 * time.Millisecond)
	if files := rolled(t, dir); len(files) != 0 {
		t.Errorf("an empty log was rolled over: %v", files)
	}
	l.Infof("old line")
	deadline := time.Now().Add(5 * time.Second)
	for len(rolled(t, dir)) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	files := rolled(t, dir)
	if len(files) != 1 {
		t.Fatalf("rolled %v, want one file", files)
	}
	if got := readLines(t, filepath.Join(dir, files[0])); len(got) != 1 || got[0] != "Info: old line" {
		t.Errorf("rolled file holds %q", got)
	}
}

func TestOpenAppendsAndFlushes(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{FlushInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Infof("first")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(filepath.Join(dir, CurrentName)); len(b) > 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := readLines(t, filepath.Join(dir, CurrentName)); len(got) != 1 {
		t.Errorf("flusher did not write the line: %q", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	l.Infof("after close") // dropped, no panic
	l.Rollover()

	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Infof("second")
	l.Close()
	if got := readLines(t, filepath.Join(dir, CurrentName)); strings.Join(got, "|") != "Info: first|Info: second" {
		t.Errorf("reopened log = %q", got)
	}
}

func TestSubscribe(t *testing.T) {
	var buf bytes.Buffer
	l := NewWriter(&buf, Info)
	ch, cancel := l.Subscribe()
	l.StartMID(1, 2)
	l.DNSQuery("example.com", "MX") // below the level: not written, not published
	select {
	case line := <-ch:
		if !prefixRE.MatchString(line) || !strings.HasSuffix(line, "Info: Start MID 1 ICID 2\n") {
			t.Errorf("subscriber got %q", line)
		}
	case <-time.After(time.Second):
		t.Fatal("no line")
	}
	cancel()
	cancel() // idempotent
	l.StartMID(3, 4)
	select {
	case line := <-ch:
		t.Errorf("line after cancel: %q", line)
	default:
	}

	// A subscriber that does not read misses lines; writers never block.
	ch2, cancel2 := l.Subscribe()
	defer cancel2()
	for i := range 3000 {
		l.StartMID(uint64(i), 0)
	}
	if n := len(ch2); n != cap(ch2) {
		t.Errorf("subscriber buffer holds %d of %d", n, cap(ch2))
	}
}

func TestNilLogger(t *testing.T) {
	var l *Logger
	l.NewICID(1, "a", "b", "c", "d", true)
	l.StartMID(1, 1)
	l.Bounced(1, 1, "a", "b", 0, "5.1.1", "550", "x")
	l.Pending(1, []int{0}, time.Now(), "Default")
	l.Log(Critical, "x")
	l.Rollover()
	if l.Enabled(Critical) {
		t.Error("nil logger enabled")
	}
	ch, cancel := l.Subscribe()
	cancel()
	select {
	case <-ch:
		t.Error("nil logger's channel delivered")
	default:
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
}

func TestConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{MaxSize: 4 << 10, Keep: 1000, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := l.Subscribe()
	defer cancel()
	const writers, each = 8, 250
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.DeliveryStart(uint64(w), uint64(i), []int{0, 1})
				if i%50 == 0 {
					l.Rollover()
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range append(rolled(t, dir), CurrentName) {
		for _, line := range readLines(t, filepath.Join(dir, f)) {
			if seen[line] {
				t.Errorf("duplicate line %q", line)
			}
			seen[line] = true
		}
	}
	if len(seen) != writers*each {
		t.Errorf("%d lines on disk, want %d", len(seen), writers*each)
	}
	if len(ch) == 0 {
		t.Error("subscriber saw nothing")
	}
}

// failingWriter fails its first write, as a full disk would, then recovers.
type failingWriter struct {
	fails int
	buf   bytes.Buffer
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.fails > 0 {
		w.fails--
		return 0, errors.New("no space left on device")
	}
	return w.buf.Write(p)
}

func TestWriteErrorRecovers(t *testing.T) {
	w := &failingWriter{fails: 1}
	l := NewWriter(w, Info)
	l.Infof("lost")
	l.Infof("kept")
	if got := strip(t, w.buf.String()); strings.Join(got, "|") != "Info: kept" {
		t.Errorf("after a failed write the log holds %q", got)
	}
}
