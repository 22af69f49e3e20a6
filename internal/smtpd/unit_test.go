package smtpd

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		utf8   bool
		sender bool
		want   string // "" accepted, else "code enhanced"
	}{
		{"user@dest.example", false, false, ""},
		{"first.last+tag@sub.dest.example", false, false, ""},
		{"o'brien@dest.example", false, false, ""},
		{"user@xn--bcher-kva.example", false, false, ""},
		{"üser@dést.example", true, false, ""},
		{"üser@dest.example", false, false, "553 5.6.7"},
		{"user%other@dest.example", false, false, "553 5.1.3"}, // %-hack, RFC 5321 §3.6.1 is silent; we refuse
		{"user%other@client.example", false, true, ""},         // a reverse path does not route
		{"host!user@dest.example", false, false, "553 5.1.3"},  // bang path
		{"a@b@dest.example", false, false, "553 5.1.3"},        // second @ (also a quoted "a@b")
		{"a@b@dest.example", false, true, "553 5.1.7"},         // same, as sender
		{"john smith@dest.example", false, false, "553 5.1.3"}, // needs quoting
		{"a..b@dest.example", false, false, "553 5.1.3"},       // RFC 5321 §4.1.2 Dot-string
		{"a.@dest.example", false, false, "553 5.1.3"},
		{"user@[192.0.2.1]", false, false, "553 5.1.2"},        // address literal
		{"user@[IPv6:2001:db8::1]", false, false, "553 5.1.2"}, // address literal
		{"user@192.0.2.1", false, false, "553 5.1.2"},          // numeric TLD
		{"user@localhost", false, false, "553 5.1.2"},          // not fully qualified
		{"user@dest.example.", false, false, "553 5.1.2"},      // trailing dot
		{"user@dest-.example", false, false, "553 5.1.2"},      // hyphen
		{"user@" + strings.Repeat("a", 64) + ".example", false, false, "553 5.1.2"},
		{strings.Repeat("a", 65) + "@dest.example", false, false, "553 5.1.3"},    // RFC 5321 §4.5.3.1.1
		{"a@" + strings.Repeat("b.", 130) + "example", false, false, "501 5.1.3"}, // §4.5.3.1.3
		{"user", false, false, "501 5.1.3"},
		{"@dest.example", false, false, "501 5.1.3"},
		{"user@", false, false, "501 5.1.2"},
		{"us\xffer@dest.example", true, false, "501 5.1.3"},
	} {
		rj := checkAddress(tc.addr, tc.utf8, tc.sender)
		got := ""
		if rj != nil {
			got = strings.Join([]string{strconv.Itoa(rj.code), strconv.Itoa(rj.enh[0]) + "." + strconv.Itoa(rj.enh[1]) + "." + strconv.Itoa(rj.enh[2])}, " ")
			if rj.reason == "" || rj.text == "" {
				t.Errorf("%q: empty reason or text", tc.addr)
			}
		}
		if got != tc.want {
			t.Errorf("checkAddress(%q, utf8=%v, sender=%v) = %q, want %q", tc.addr, tc.utf8, tc.sender, got, tc.want)
		}
	}
}

// TestGuard checks the content guard over every split of its input, so a
// CRLF cut between two reads is handled.
func TestGuard(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr error
	}{
		{"a\r\nb\r\n", nil},
		{"", nil},
		{"a\nb\r\n", errBareLF},
		{"a\r\nb\n", errBareLF},
		{"a\rb\r\n", errBareCR},
		{"a\r\nb\r", errBareCR},
		{"a\r\r\n", errBareCR},
		{"\n", errBareLF},
	} {
		for split := 0; split <= len(tc.in); split++ {
			r := io.MultiReader(strings.NewReader(tc.in[:split]), strings.NewReader(tc.in[split:]))
			g := &guard{r: iotest.OneByteReader(r)}
			out, err := io.ReadAll(g)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%q split %d: err %v, want %v", tc.in, split, err, tc.wantErr)
			}
			if tc.wantErr == nil && string(out) != tc.in {
				t.Errorf("%q: passed %q", tc.in, out)
			}
			if tc.wantErr != nil {
				if _, err2 := g.Read(make([]byte, 1)); !errors.Is(err2, tc.wantErr) {
					t.Errorf("%q: error not sticky: %v", tc.in, err2)
				}
			}
		}
	}
	// An error of the underlying reader is kept for the reply.
	g := &guard{r: iotest.ErrReader(errTest)}
	if _, err := io.ReadAll(g); !errors.Is(err, errTest) || !errors.Is(g.err, errTest) {
		t.Errorf("underlying error: %v / %v", err, g.err)
	}
}

func TestHeaderScan(t *testing.T) {
	for _, tc := range []struct {
		name, in      string
		id, subj      string
		haveID, haveS bool
	}{
		{"plain", "Message-ID: <a@b>\r\nSubject: hi\r\n\r\nSubject: body\r\n", "<a@b>", "hi", true, true},
		{"case and fold", "message-id:\r\n <x@y>\r\nSUBJECT: one\r\n\ttwo\r\n\r\n", "<x@y>", "one\ttwo", true, true},
		{"encoded", "Subject: =?iso-8859-1?q?caf=E9?=\r\n\r\n", "", "café", false, true},
		{"first wins", "Subject: a\r\nSubject: b\r\n\r\n", "", "a", false, true},
		{"none", "From: a@b\r\n\r\nMessage-ID: <no@body>\r\n", "", "", false, false},
		{"headers only, no blank line", "Subject: end", "", "end", false, true},
		{"body never scanned", "X: y\r\n\r\n" + strings.Repeat("Subject: z\r\n", 10), "", "", false, false},
	} {
		var h headerScan
		for i := 0; i < len(tc.in); i += 3 {
			h.feed([]byte(tc.in[i:min(i+3, len(tc.in))]))
		}
		h.finish()
		if h.msgID != tc.id || h.subject != tc.subj || h.haveID != tc.haveID || h.haveSubj != tc.haveS {
			t.Errorf("%s: %q %q %v %v", tc.name, h.msgID, h.subject, h.haveID, h.haveSubj)
		}
	}
	// The scan is bounded: a huge header section stops being scanned.
	var h headerScan
	h.feed(bytes.Repeat([]byte("X-Filler: 0123456789012345678901234567890123456789\r\n"), 2000))
	h.feed([]byte("Subject: late\r\n\r\n"))
	if !h.done || h.haveSubj {
		t.Errorf("unbounded scan: done=%v subject=%q", h.done, h.subject)
	}
	// A very long field is truncated, not kept whole.
	var h2 headerScan
	h2.feed([]byte("Subject: " + strings.Repeat("s", 5000) + "\r\n\r\n"))
	if len(h2.subject) > maxField {
		t.Errorf("subject kept %d octets", len(h2.subject))
	}
}

func TestXtext(t *testing.T) {
	if got := xtext("a+b=c d\x01é"); got != "a+2Bb+3Dc+20d+01+C3+A9" {
		t.Errorf("xtext: %q", got)
	}
	if got := utf8AddrXtext("é+a"); got != `\x{E9}\x{2B}a` {
		t.Errorf("utf8AddrXtext: %q", got)
	}
}

// FuzzGuard: the guard fails exactly when its input holds a bare CR or LF,
// and otherwise passes the input through unchanged.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{"a\r\n", "a\n.\n", "\r.\r", "ok\r\n\r\nbody\r\n", "x\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		g := &guard{r: iotest.HalfReader(bytes.NewReader(in))}
		out, err := io.ReadAll(g)
		bare := bytes.Contains(bytes.ReplaceAll(in, []byte("\r\n"), nil), []byte("\r")) ||
			bytes.Contains(bytes.ReplaceAll(in, []byte("\r\n"), nil), []byte("\n"))
		if bare != (err != nil) {
			t.Fatalf("%q: err %v, bare %v", in, err, bare)
		}
		if err == nil && !bytes.Equal(out, in) {
			t.Fatalf("%q: changed to %q", in, out)
		}
	})
}

// FuzzCheckAddress: an accepted address has one '@', a dot-atom local part
// without routing characters, and a plain domain.
func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"a@b.example", "a%b@c.example", "a@[1.2.3.4]", "a!b@c.d", "a@b@c.d"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, addr string, utf8 bool) {
		if checkAddress(addr, utf8, false) != nil {
			return
		}
		if strings.Count(addr, "@") != 1 || strings.ContainsAny(addr, "%![]\" \r\n\\:,<>") {
			t.Fatalf("accepted %q", addr)
		}
	})
}
