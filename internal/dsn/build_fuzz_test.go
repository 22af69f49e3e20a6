package dsn

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// FuzzBuild renders reports made of arbitrary field values (what a remote
// server's reply, a client's ENVID/ORCPT or an original message can put in
// a DSN) and checks the rendering: Build never panics; what it returns is a
// well-formed message (CRLF line ends only, no line over 998 octets, 7-bit
// headers, except To for a non-ASCII sender) whose delivery-status part Parse reads back with the same
// recipients in the same order, the same actions and statuses — so no
// value can inject a field or a recipient block.
// The seed corpus is in testdata/fuzz/FuzzBuild.
func FuzzBuild(f *testing.F) {
	f.Add("sender@corp.example", "user@example.com", "rfc822;user+40example.com", "5.1.1", "mx.example.com",
		"smtp; 550 5.1.1 No such user", "MTA-STS policy blocked delivery", "envid+2B1", false, []byte("Subject: hi\r\n\r\nbody\r\n"))
	f.Add("a@b.example", "c@d.example", "", "4.4.1", "", "smtp; 421 4.4.1\r\nStatus: 2.0.0\r\n\r\nFinal-Recipient: rfc822; x@y", "", "", true, []byte("x"))
	f.Add("a@b.example", "c@d.example\r\nAction: delivered", "utf-8;\\x{E9}", "5.0.0", "[192.0.2.1]", "smtp; "+strings.Repeat("x", 2000), strings.Repeat("é", 600), "", false, []byte(strings.Repeat("l\n", 100)))
	f.Fuzz(func(t *testing.T, sender, addr, orcpt, status, remote, diag, reason, envid string, delayed bool, original []byte) {
		action := ActionFailed
		if delayed {
			action = ActionDelayed
		}
		when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		r := &Report{
			ReportingMTA: "outpost.example",
			EnvID:        envid,
			ArrivalDate:  when,
			Sender:       sender,
			RET:          "FULL",
			Date:         when,
			MessageID:    "<fuzz@outpost.example>",
			Recipients: []Recipient{
				{Addr: addr, ORCPT: orcpt, Action: action, Status: status, RemoteMTA: remote, Diagnostic: diag, Reason: reason, LastAttempt: when},
				{Addr: "second@example.net", Action: ActionFailed, Status: "5.7.1", Diagnostic: diag},
			},
		}
		msg, err := Build(r, bytes.NewReader(original), Options{MaxCopy: 4096})
		if err != nil {
			return
		}
		for i, c := range msg {
			if c == '\n' && (i == 0 || msg[i-1] != '\r') || c == '\r' && (i+1 >= len(msg) || msg[i+1] != '\n') {
				t.Fatalf("bare CR or LF at %d in\n%q", i, msg)
			}
		}
		for _, l := range bytes.Split(msg, []byte("\r\n")) {
			if len(l) > maxLine {
				t.Fatalf("line of %d octets: %q", len(l), l)
			}
		}
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("rendered DSN is not a message: %v\n%q", err, msg)
		}
		for k, vs := range m.Header {
			if k == "To" && !isASCII(sender) {
				continue // RFC 6532: a UTF-8 sender is addressed in UTF-8 (documented in dsn.go)
			}
			for _, v := range vs {
				for i := 0; i < len(v); i++ {
					if v[i] >= 0x80 {
						t.Fatalf("8-bit header %s: %q", k, v)
					}
				}
			}
		}
		p := statusOf(t, msg)
		if len(p.Recipients) != 2 {
			t.Fatalf("%d recipient blocks parsed, 2 built:\n%s", len(p.Recipients), msg)
		}
		if p.Recipients[0].Action != action || p.Recipients[0].Status != status ||
			p.Recipients[1].Action != ActionFailed || p.Recipients[1].Status != "5.7.1" || p.Recipients[1].Addr != "second@example.net" {
			t.Fatalf("recipients changed: %+v\n%s", p.Recipients, msg)
		}
		if p.ReportingMTA != "outpost.example" {
			t.Fatalf("Reporting-MTA %q", p.ReportingMTA)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
