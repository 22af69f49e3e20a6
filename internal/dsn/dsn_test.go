package dsn

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	arrival = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	lastTry = time.Date(2026, 3, 7, 8, 55, 0, 0, time.UTC)
	dsnDate = time.Date(2026, 3, 7, 9, 0, 5, 0, time.UTC)
)

const smallOriginal = "From: Alice <alice@corp.example>\r\n" +
	"To: bob@example.com\r\n" +
	"Subject: Quarterly numbers\r\n" +
	"Message-ID: <q1@corp.example>\r\n" +
	"\r\n" +
	"Hello Bob,\r\nthe numbers are attached.\r\n"

// dsnMsg is a DSN taken apart by the standard library, which doubles as the
// proof that Build's output is well-formed.
type dsnMsg struct {
	hdr   mail.Header
	parts []dsnPart
}

type dsnPart struct {
	hdr  textproto.MIMEHeader
	body []byte // transfer-decoded
}

func parseMsg(t *testing.T, msg []byte) dsnMsg {
	t.Helper()
	checkLines(t, msg)
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("net/mail: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q %v", mt, params)
	}
	out := dsnMsg{hdr: m.Header}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		var r io.Reader = p
		if p.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
			r = quotedprintable.NewReader(p)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		out.parts = append(out.parts, dsnPart{hdr: p.Header, body: body})
	}
	return out
}

// checkLines asserts CRLF line endings and the RFC 5322 line limit.
func checkLines(t *testing.T, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Errorf("message does not end in CRLF")
	}
	for i, line := range bytes.Split(msg, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d is %d octets", i+1, len(line))
		}
		if bytes.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
	}
}

func baseReport() *Report {
	return &Report{
		ReportingMTA: "outpost.corp.example",
		ArrivalDate:  arrival,
		Sender:       "alice@corp.example",
		MessageID:    "dsn1@outpost.corp.example",
		Date:         dsnDate,
		Recipients: []Recipient{{
			Addr:        "bob@example.com",
			Action:      ActionFailed,
			Status:      "5.1.1",
			RemoteMTA:   "mx1.example.com",
			Diagnostic:  "smtp; 550 5.1.1 No such user",
			LastAttempt: lastTry,
		}},
	}
}

func TestBuild(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(r *Report)
		subject string
		status  string   // the whole message/delivery-status part
		text    []string // phrases the human-readable part must hold
	}{
		{
			name:    "permanent failure",
			subject: "Delivery Status Notification (Failure)",
			status: "Reporting-MTA: dns; outpost.corp.example\r\n" +
				"Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n" +
				"\r\n" +
				"Final-Recipient: rfc822; bob@example.com\r\n" +
				"Action: failed\r\n" +
				"Status: 5.1.1\r\n" +
				"Remote-MTA: dns; mx1.example.com\r\n" +
				"Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n" +
				"Last-Attempt-Date: Sat, 07 Mar 2026 08:55:00 +0000\r\n",
			text: []string{
				"This is the mail system at host outpost.corp.example.",
				"<bob@example.com>: delivery failed permanently (status 5.1.1).",
				"The remote server mx1.example.com replied: 550 5.1.1 No such user",
				"Your message is attached.",
			},
		},
		{
			name: "MTA-STS expiry with ENVID and ORCPT",
			mod: func(r *Report) {
				r.EnvID = "QQ+2B314"
				r.Recipients[0] = Recipient{
					Addr: "bob@example.com", ORCPT: "rfc822;b+2Bob@example.com",
					Action: ActionFailed, Status: "5.4.8", LastAttempt: lastTry, Expired: true,
					Reason: "MTA-STS policy for example.com blocked delivery: no MX host matches the policy",
				}
			},
			subject: "Delivery Status Notification (Failure)",
			status: "Reporting-MTA: dns; outpost.corp.example\r\n" +
				"Original-Envelope-Id: QQ+314\r\n" +
				"Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n" +
				"\r\n" +
				"Original-Recipient: rfc822;b+ob@example.com\r\n" +
				"Final-Recipient: rfc822; bob@example.com\r\n" +
				"Action: failed\r\n" +
				"Status: 5.4.8\r\n" +
				"Last-Attempt-Date: Sat, 07 Mar 2026 08:55:00 +0000\r\n",
			text: []string{
				"Reason: MTA-STS policy for example.com blocked delivery: no MX host",
				"matches the policy",
				"The message was in the queue for 5 days 0 hours, the longest time",
			},
		},
		{
			name: "delay warning",
			mod: func(r *Report) {
				r.Recipients[0] = Recipient{
					Addr: "carol@example.org", Action: ActionDelayed, Status: "4.4.1",
					RemoteMTA: "mx.example.org", LastAttempt: lastTry,
					Diagnostic:     "smtp; 421 4.4.1 Try again later",
					WillRetryUntil: time.Date(2026, 3, 9, 9, 0, 0, 0, time.UTC),
				}
			},
			subject: "Delivery Status Notification (Delay)",
			status: "Reporting-MTA: dns; outpost.corp.example\r\n" +
				"Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n" +
				"\r\n" +
				"Final-Recipient: rfc822; carol@example.org\r\n" +
				"Action: delayed\r\n" +
				"Status: 4.4.1\r\n" +
				"Remote-MTA: dns; mx.example.org\r\n" +
				"Diagnostic-Code: smtp; 421 4.4.1 Try again later\r\n" +
				"Last-Attempt-Date: Sat, 07 Mar 2026 08:55:00 +0000\r\n" +
				"Will-Retry-Until: Mon, 09 Mar 2026 09:00:00 +0000\r\n",
			text: []string{
				"<carol@example.org>: delivery delayed (status 4.4.1).",
				"The message has been in the queue for 5 days 0 hours.",
				"The mail system will keep trying until Mon, 09 Mar 2026 09:00:00 +0000.",
			},
		},
		{
			name: "failed and delayed together, internationalized recipient",
			mod: func(r *Report) {
				r.ArrivalDate = time.Time{}
				r.Recipients = append(r.Recipients, Recipient{
					Addr: "jörg@bücher.example", Action: ActionDelayed, Status: "4.7.5",
					Reason: "the certificate of mx.bücher.example has expired",
				})
			},
			subject: "Delivery Status Notification (Failure)",
			status: "Reporting-MTA: dns; outpost.corp.example\r\n" +
				"\r\n" +
				"Final-Recipient: rfc822; bob@example.com\r\n" +
				"Action: failed\r\n" +
				"Status: 5.1.1\r\n" +
				"Remote-MTA: dns; mx1.example.com\r\n" +
				"Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n" +
				"Last-Attempt-Date: Sat, 07 Mar 2026 08:55:00 +0000\r\n" +
				"\r\n" +
				`Final-Recipient: utf-8; j\x{F6}rg@b\x{FC}cher.example` + "\r\n" +
				"Action: delayed\r\n" +
				"Status: 4.7.5\r\n",
			text: []string{
				"<jörg@bücher.example>: delivery delayed (status 4.7.5).",
				"Reason: the certificate of mx.bücher.example has expired",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := baseReport()
			if tt.mod != nil {
				tt.mod(r)
			}
			msg, err := Build(r, strings.NewReader(smallOriginal), Options{})
			if err != nil {
				t.Fatal(err)
			}
			m := parseMsg(t, msg)
			wantHdr := map[string]string{
				"From":           `"Mail Delivery System" <MAILER-DAEMON@outpost.corp.example>`,
				"To":             "<alice@corp.example>",
				"Subject":        tt.subject,
				"Date":           "Sat, 07 Mar 2026 09:00:05 +0000",
				"Message-Id":     "<dsn1@outpost.corp.example>",
				"Auto-Submitted": "auto-replied",
				"Mime-Version":   "1.0",
			}
			for k, v := range wantHdr {
				if got := m.hdr.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if len(m.parts) != 3 {
				t.Fatalf("%d parts, want 3", len(m.parts))
			}
			wantTypes := []string{"text/plain", "message/delivery-status", "message/rfc822"}
			for i, p := range m.parts {
				if mt, _, _ := mime.ParseMediaType(p.hdr.Get("Content-Type")); mt != wantTypes[i] {
					t.Errorf("part %d is %s, want %s", i, mt, wantTypes[i])
				}
			}
			if got := string(m.parts[1].body); got != tt.status {
				t.Errorf("delivery-status:\n%s\nwant:\n%s", got, tt.status)
			}
			text := string(m.parts[0].body)
			for _, s := range tt.text {
				if !strings.Contains(text, s) {
					t.Errorf("text part lacks %q:\n%s", s, text)
				}
			}
			if got := string(m.parts[2].body); got != smallOriginal {
				t.Errorf("attached original = %q", got)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	r := baseReport()
	r.EnvID = "ENV+2Bid+3D1"
	r.Recipients = append(r.Recipients,
		Recipient{Addr: "carol@example.org", ORCPT: "rfc822;Carol@Example.org", Action: ActionDelayed,
			Status: "4.4.7", WillRetryUntil: dsnDate.Add(48 * time.Hour), LastAttempt: lastTry,
			Diagnostic: "X-Outpost; " + strings.Repeat("timeout talking to mx.example.org ", 40) + "end"},
		Recipient{Addr: `"quoted local"@example.net`, Action: ActionFailed, Status: "5.7.5",
			RemoteMTA: "[192.0.2.1]", Reason: "not in the status part"},
		Recipient{Addr: "δοκιμή@παράδειγμα.δοκιμή", Action: ActionFailed, Status: "5.1.10"},
	)
	msg, err := Build(r, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := parseMsg(t, msg)
	if len(m.parts) != 2 {
		t.Fatalf("%d parts, want 2 (no original)", len(m.parts))
	}
	got, err := Parse(bytes.NewReader(m.parts[1].body))
	if err != nil {
		t.Fatal(err)
	}
	want := &Report{ReportingMTA: r.ReportingMTA, EnvID: r.EnvID, ArrivalDate: r.ArrivalDate}
	for _, rc := range r.Recipients {
		rc.Reason, rc.Expired = "", false
		want.Recipients = append(want.Recipients, rc)
	}
	if !reportsEqual(got, want) {
		t.Errorf("Parse(Build(r)) =\n%+v\nwant\n%+v", got, want)
	}
}

// reportsEqual compares reports with time.Time.Equal.
func reportsEqual(a, b *Report) bool {
	norm := func(r *Report) Report {
		c := *r
		c.ArrivalDate, c.Date = c.ArrivalDate.UTC(), c.Date.UTC()
		c.Recipients = append([]Recipient(nil), r.Recipients...)
		for i := range c.Recipients {
			c.Recipients[i].LastAttempt = c.Recipients[i].LastAttempt.UTC()
			c.Recipients[i].WillRetryUntil = c.Recipients[i].WillRetryUntil.UTC()
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestOriginalCopy(t *testing.T) {
	header := "From: alice@corp.example\r\nTo: bob@example.com\r\nSubject: big\r\n\r\n"
	bigBody := strings.Repeat("0123456789012345678901234567890123456789\r\n", 300) // ~12.6 KB
	longHeader := "From: alice@corp.example\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("y", 60)+"\r\n", 200) + "\r\nbody\r\n"
	tests := []struct {
		name     string
		original string
		ret      string
		maxCopy  int
		wantType string
		want     string // exact attached bytes
		wantCTE  string
	}{
		{name: "small whole", original: smallOriginal, wantType: "message/rfc822", want: smallOriginal},
		{name: "RET=FULL whole", original: smallOriginal, ret: "FULL", wantType: "message/rfc822", want: smallOriginal},
		{name: "RET=HDRS", original: smallOriginal, ret: "HDRS", wantType: "text/rfc822-headers",
			want: smallOriginal[:strings.Index(smallOriginal, "\r\n\r\n")+2]},
		{name: "exactly MaxCopy", original: smallOriginal, maxCopy: len(smallOriginal), wantType: "message/rfc822", want: smallOriginal},
		{name: "one byte over MaxCopy", original: smallOriginal, maxCopy: len(smallOriginal) - 1, wantType: "text/rfc822-headers",
			want: smallOriginal[:strings.Index(smallOriginal, "\r\n\r\n")+2]},
		{name: "over 10 KB: headers only", original: header + bigBody, wantType: "text/rfc822-headers",
			want: "From: alice@corp.example\r\nTo: bob@example.com\r\nSubject: big\r\n"},
		{name: "headers over MaxCopy: truncated at a line", original: longHeader, maxCopy: 1000, wantType: "text/rfc822-headers",
			want: longHeader[:strings.LastIndex(longHeader[:1000], "\r\n")+2]},
		{name: "bare LF converted", original: "Subject: lf\n\nbody\n", wantType: "message/rfc822", want: "Subject: lf\r\n\r\nbody\r\n"},
		{name: "8-bit body: headers only, 7bit", original: "Subject: hi\r\n\r\nGr\xfc\xdfe\r\n",
			wantType: "text/rfc822-headers", want: "Subject: hi\r\n"},
		{name: "SMTPUTF8 headers: quoted-printable", original: "From: jörg@bücher.example\r\nSubject: Grüße\r\n\r\nx\r\n",
			wantType: "text/rfc822-headers", want: "From: jörg@bücher.example\r\nSubject: Grüße\r\n", wantCTE: "quoted-printable"},
		{name: "long line: headers only", original: "Subject: x\r\n\r\n" + strings.Repeat("z", 1200) + "\r\n",
			wantType: "text/rfc822-headers", want: "Subject: x\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := baseReport()
			r.RET = tt.ret
			msg, err := Build(r, strings.NewReader(tt.original), Options{MaxCopy: tt.maxCopy})
			if err != nil {
				t.Fatal(err)
			}
			m := parseMsg(t, msg)
			if len(m.parts) != 3 {
				t.Fatalf("%d parts", len(m.parts))
			}
			p := m.parts[2]
			if mt, _, _ := mime.ParseMediaType(p.hdr.Get("Content-Type")); mt != tt.wantType {
				t.Errorf("type %s, want %s", mt, tt.wantType)
			}
			if got := p.hdr.Get("Content-Transfer-Encoding"); got != tt.wantCTE {
				t.Errorf("Content-Transfer-Encoding %q, want %q", got, tt.wantCTE)
			}
			if string(p.body) != tt.want {
				t.Errorf("attached %q\nwant %q", p.body, tt.want)
			}
			max := tt.maxCopy
			if max == 0 {
				max = DefaultMaxCopy
			}
			if len(p.body) > max+len(tt.original) && len(p.body) > max {
				t.Errorf("attached %d bytes, cap %d", len(p.body), max)
			}
		})
	}
}

func TestHeaderTruncationDefaultCap(t *testing.T) {
	orig := strings.Repeat("X-Big: "+strings.Repeat("h", 90)+"\r\n", 200) + "\r\nbody\r\n" // ~19 KB of headers
	msg, err := Build(baseReport(), strings.NewReader(orig), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := parseMsg(t, msg)
	body := m.parts[2].body
	if len(body) > DefaultMaxCopy || len(body) < DefaultMaxCopy-100 {
		t.Errorf("attached %d header bytes, want just under %d", len(body), DefaultMaxCopy)
	}
	if !bytes.HasSuffix(body, []byte("h\r\n")) || !strings.HasPrefix(orig, string(body)) {
		t.Errorf("truncation is not a prefix cut at a line end")
	}
	if !strings.Contains(string(m.parts[0].body), "The first part of your message's header section is attached.") {
		t.Errorf("text does not say the headers were cut")
	}
}

func TestNullSender(t *testing.T) {
	r := baseReport()
	r.Sender = ""
	_, err := Build(r, strings.NewReader(smallOriginal), Options{})
	if !errors.Is(err, ErrNullSender) {
		t.Fatalf("err = %v, want ErrNullSender", err)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(r *Report)
	}{
		{"nil recipients", func(r *Report) { r.Recipients = nil }},
		{"bad host", func(r *Report) { r.ReportingMTA = "bad host" }},
		{"empty host", func(r *Report) { r.ReportingMTA = "" }},
		{"bad RET", func(r *Report) { r.RET = "SOME" }},
		{"bad ENVID xtext", func(r *Report) { r.EnvID = "a=b" }},
		{"sender with CRLF", func(r *Report) { r.Sender = "a@b\r\nBcc: x@y" }},
		{"sender with >", func(r *Report) { r.Sender = "a@b>" }},
		{"bad status", func(r *Report) { r.Recipients[0].Status = "550" }},
		{"failed with 4.x.x", func(r *Report) { r.Recipients[0].Status = "4.1.1" }},
		{"delayed with 5.x.x", func(r *Report) { r.Recipients[0].Action = ActionDelayed }},
		{"unknown action", func(r *Report) { r.Recipients[0].Action = "delivered"; r.Recipients[0].Status = "2.0.0" }},
		{"diagnostic without type", func(r *Report) { r.Recipients[0].Diagnostic = "550 no such user" }},
		{"ORCPT without type", func(r *Report) { r.Recipients[0].ORCPT = "bob@example.com" }},
		{"ORCPT bad xtext", func(r *Report) { r.Recipients[0].ORCPT = "rfc822;bob+zz@example.com" }},
		{"bad remote MTA", func(r *Report) { r.Recipients[0].RemoteMTA = "mx1 example" }},
		{"empty recipient", func(r *Report) { r.Recipients[0].Addr = "" }},
		{"bad message id", func(r *Report) { r.MessageID = "no-at-sign" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := baseReport()
			tt.mod(r)
			if _, err := Build(r, nil, Options{}); err == nil {
				t.Error("Build succeeded")
			} else if !strings.HasPrefix(err.Error(), "dsn: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestLongAndHostileDiagnostics(t *testing.T) {
	long := "smtp; 550 5.7.1 " + strings.Repeat("blocked ", 400) + strings.Repeat("A", 2500)
	r := baseReport()
	r.Recipients[0].Diagnostic = long
	r.Recipients = append(r.Recipients, Recipient{
		Addr: "eve@example.com", Action: ActionFailed, Status: "5.0.0",
		Diagnostic: "smtp; 550 first line\r\nX-Injected: yes\r\n\r\nAction: delivered",
		Reason:     "line one\nFrom: evil@example.com",
	})
	msg, err := Build(r, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := parseMsg(t, msg) // also checks every line is at most 998 octets
	if m.hdr.Get("X-Injected") != "" || bytes.Contains(msg, []byte("\r\nX-Injected")) || bytes.Contains(msg, []byte("\r\nFrom: evil")) {
		t.Error("diagnostic text injected a field")
	}
	got, err := Parse(bytes.NewReader(m.parts[1].body))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recipients) != 2 {
		t.Fatalf("%d recipients", len(got.Recipients))
	}
	if want := "smtp; 550 first line X-Injected: yes Action: delivered"; got.Recipients[1].Diagnostic != want {
		t.Errorf("hostile diagnostic = %q, want %q", got.Recipients[1].Diagnostic, want)
	}
	if got.Recipients[1].Action != ActionFailed {
		t.Errorf("action = %q", got.Recipients[1].Action)
	}
	// Spaces survive folding; the 2500-octet word gains the spaces of its split.
	d := got.Recipients[0].Diagnostic
	if !strings.HasPrefix(d, "smtp; 550 5.7.1 "+strings.Repeat("blocked ", 400)) || strings.ReplaceAll(d, " ", "") != strings.ReplaceAll(long, " ", "") {
		t.Errorf("long diagnostic did not survive folding")
	}
}

func TestGeneratedMessageID(t *testing.T) {
	r := baseReport()
	r.MessageID, r.Date = "", time.Time{}
	msg, err := Build(r, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := parseMsg(t, msg)
	id := m.hdr.Get("Message-Id")
	if !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@outpost.corp.example>") {
		t.Errorf("Message-ID = %q", id)
	}
	if _, err := m.hdr.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
}

func TestUTF8Sender(t *testing.T) {
	r := baseReport()
	r.Sender = "jörg@bücher.example"
	msg, err := Build(r, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg, []byte("\r\nTo: <jörg@bücher.example>\r\n")) {
		t.Errorf("To field does not carry the UTF-8 sender")
	}
}

func TestParseErrors(t *testing.T) {
	ok := "Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n"
	if _, err := Parse(strings.NewReader(ok)); err != nil {
		t.Fatalf("valid input: %v", err)
	}
	tests := map[string]string{
		"empty":                "",
		"no recipients":        "Reporting-MTA: dns; a.example\r\n",
		"no reporting MTA":     "Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n",
		"no final recipient":   "Reporting-MTA: dns; a\r\n\r\nAction: failed\r\nStatus: 5.0.0\r\n",
		"no action":            "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; b@c\r\nStatus: 5.0.0\r\n",
		"no status":            "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\n",
		"bad status":           strings.Replace(ok, "5.0.0", "5.0", 1),
		"bad action":           strings.Replace(ok, "failed", "bounced", 1),
		"duplicate status":     ok + "Status: 5.1.1\r\n",
		"bad date":             strings.Replace(ok, "\r\n\r\n", "\r\nArrival-Date: yesterday\r\n\r\n", 1),
		"leading continuation": " folded\r\n" + ok,
		"not a field":          strings.Replace(ok, "Action: failed", "Action failed", 1),
		"8-bit":                strings.Replace(ok, "b@c", "b\xc3\xa9@c", 1),
		"bad utf-8 address":    strings.Replace(ok, "rfc822; b@c", `utf-8; b\x{D800}@c`, 1),
		"untyped recipient":    strings.Replace(ok, "rfc822; b@c", "b@c", 1),
	}
	for name, in := range tests {
		if _, err := Parse(strings.NewReader(in)); err == nil {
			t.Errorf("%s: Parse succeeded", name)
		}
	}
}

func TestParseLenient(t *testing.T) {
	in := "Reporting-MTA: dns;\n a.example\nX-Postfix-Queue-ID: 123\n\n\n" +
		"final-recipient: RFC822; b@c\naction: Failed\nstatus: 5.0.0 (permanent)\nX-Extra: 1\n"
	got, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Report{ReportingMTA: "a.example", Recipients: []Recipient{{Addr: "b@c", Action: "failed", Status: "5.0.0"}}}
	if !reportsEqual(got, want) {
		t.Errorf("got %+v", got)
	}
}

func TestXtext(t *testing.T) {
	for _, s := range []string{"", "a@b", "a+b=c d\\e", "~!"} {
		enc := xtextEncode(s)
		dec, err := xtextDecode(enc)
		if err != nil || dec != s {
			t.Errorf("xtext %q -> %q -> %q, %v", s, enc, dec, err)
		}
	}
	if got := xtextEncode("a+b=c d"); got != "a+2Bb+3Dc+20d" {
		t.Errorf("xtextEncode = %q", got)
	}
	for _, bad := range []string{"a+2b", "a+2", "a=b", "a b", "+0A"} {
		if _, err := xtextDecode(bad); err == nil {
			t.Errorf("xtextDecode(%q) succeeded", bad)
		}
	}
	// RFC 6533 §3 utf-8-addr-xtext.
	for _, s := range []string{"jörg@bücher.example", "a+b=c\\d e@x", "😀@example"} {
		enc := utf8AddrXtextEncode(s)
		dec, err := utf8AddrXtextDecode(enc)
		if err != nil || dec != s {
			t.Errorf("utf-8-addr-xtext %q -> %q -> %q, %v", s, enc, dec, err)
		}
	}
	if got := utf8AddrXtextEncode("a+é@x"); got != `a\x{2B}\x{E9}@x` {
		t.Errorf("utf8AddrXtextEncode = %q", got)
	}
	for _, bad := range []string{`\x{}`, `\x{e9}`, `\x{110000}`, `\x{E9`, `a+b`, `\y{41}`} {
		if _, err := utf8AddrXtextDecode(bad); err == nil {
			t.Errorf("utf8AddrXtextDecode(%q) succeeded", bad)
		}
	}
}

func TestQueueTime(t *testing.T) {
	tests := map[time.Duration]string{
		30 * time.Second:                          "less than a minute",
		time.Minute:                               "1 minute",
		4*time.Hour + time.Minute:                 "4 hours 1 minute",
		5 * 24 * time.Hour:                        "5 days 0 hours",
		24*time.Hour + time.Hour + 59*time.Minute: "1 day 1 hour",
	}
	for d, want := range tests {
		if got := queueTime(d); got != want {
			t.Errorf("queueTime(%v) = %q, want %q", d, got, want)
		}
	}
}

// Parse must stay linear on many continuation lines (a quadratic unfolding
// would take minutes here).
func TestParseManyContinuations(t *testing.T) {
	in := "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; x\r\n" +
		strings.Repeat(" y\r\n", 250000)
	start := time.Now()
	r, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Recipients[0].Diagnostic) != len("smtp; x")+2*250000 {
		t.Errorf("diagnostic is %d bytes", len(r.Recipients[0].Diagnostic))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Parse took %v", d)
	}
}
