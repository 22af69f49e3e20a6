package dsn

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts
// and Build can render survives Build → Parse unchanged once normalized.
// The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p1, err := Parse(bytes.NewReader(in))
		if err != nil {
			return
		}
		p1.Sender = "postmaster@outpost.example"
		msg, err := Build(p1, nil, Options{})
		if err != nil {
			return // Parse accepts more than Build writes (other actions, address types)
		}
		p2 := statusOf(t, msg)
		msg2, err := Build(p2, nil, Options{})
		if err != nil {
			t.Fatalf("Build rejects its own output: %v", err)
		}
		p3 := statusOf(t, msg2)
		if !reportsEqual(p2, p3) {
			t.Fatalf("not stable:\n%+v\n%+v", p2, p3)
		}
	})
}

func statusOf(t *testing.T, msg []byte) *Report {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			t.Fatalf("no delivery-status part: %v", err)
		}
		if strings.HasPrefix(p.Header.Get("Content-Type"), "message/delivery-status") {
			r, err := Parse(p)
			if err != nil {
				t.Fatalf("Parse rejects Build's output: %v\n%s", err, msg)
			}
			r.Sender = "postmaster@outpost.example"
			return r
		}
	}
}
