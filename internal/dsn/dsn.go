// Package dsn builds and parses delivery status notifications (RFC 3464):
// the bounce sent to the envelope sender when a recipient fails permanently
// or its queue lifetime runs out, and the warning sent when delivery is
// delayed. It is a leaf package: standard library only, nothing internal.
//
// A DSN built here is a multipart/report; report-type=delivery-status
// message (RFC 6522) of three parts:
//
//  1. text/plain: what happened to each recipient and why, in words — the
//     remote server's reply or our own reason, and for an expiry or a delay
//     the time the message spent in the queue;
//  2. message/delivery-status: the machine-readable fields of RFC 3464 §2.2
//     (per message) and §2.3 (per recipient);
//  3. the original message (message/rfc822) when it is at most
//     Options.MaxCopy bytes, 7-bit clean and RET is not HDRS; otherwise its
//     header section alone (text/rfc822-headers), truncated to MaxCopy.
//
// Invariants:
//   - No DSN is ever built for the null reverse path (RFC 5321 §4.5.5,
//     RFC 3464 §2): Build returns ErrNullSender and the caller drops it.
//   - The DSN itself is 7-bit: every line ends in CRLF and is at most 998
//     octets (RFC 5322 §2.1.1), so any relay can carry it without 8BITMIME.
//     Long fields are folded; a single word longer than maxWord octets is
//     split (which adds a space when the field is unfolded). An original
//     containing 8-bit bytes is therefore returned as headers only, and those
//     headers are quoted-printable encoded when they are themselves 8-bit
//     (SMTPUTF8). The one exception is a non-ASCII envelope sender: the To
//     field then carries it in UTF-8 (RFC 6532), and such a DSN can only be
//     relayed with SMTPUTF8, which its envelope needs anyway.
//   - Text that comes from outside (remote replies, addresses, reasons) is
//     stripped of control characters before it reaches a header or a field,
//     so a hostile reply cannot inject fields. Non-ASCII characters in the
//     delivery-status part are replaced by '?', except in addresses, which
//     use the RFC 6533 "utf-8" address type.
//
// Build fails (with a wrapped error) only on a caller's mistake: a missing or
// malformed field, an Action/Status mismatch. It never fails because of the
// original's content. The DSN goes out with a null reverse path (MAIL FROM:<>);
// that is the caller's job.
package dsn

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNullSender is returned by Build when the envelope sender is the null
// reverse path: a DSN is never sent about a DSN (RFC 3464 §2, RFC 5321
// §4.5.5). The caller logs and drops the notification.
var ErrNullSender = errors.New("dsn: no notification for the null sender")

// DefaultMaxCopy is the default cap, in bytes, on how much of the original
// message a DSN returns.
const DefaultMaxCopy = 10 << 10

// The Action values (RFC 3464 §2.3.3) that Build generates.
const (
	ActionFailed  = "failed"
	ActionDelayed = "delayed"
)

// Recipient is the per-recipient part of a report (RFC 3464 §2.3).
type Recipient struct {
	// Addr is the final recipient, the forward path we tried (Final-Recipient).
	Addr string
	// ORCPT is the RFC 3461 ORCPT parameter as received, "addr-type;xtext"
	// (Original-Recipient, written xtext-decoded); optional.
	ORCPT string
	// Action is ActionFailed or ActionDelayed.
	Action string
	// Status is the RFC 3463 enhanced code: 5.x.x for failed, 4.x.x for
	// delayed.
	Status string
	// RemoteMTA is the host name of the server that gave the reply; optional.
	RemoteMTA string
	// Diagnostic is "diagnostic-type; text", e.g. "smtp; 550 5.1.1 No such
	// user"; optional.
	Diagnostic string
	// LastAttempt is the time of the last delivery attempt; optional.
	LastAttempt time.Time
	// WillRetryUntil is when a delayed recipient's queue lifetime ends
	// (RFC 3464 §2.3.9); optional, only for delayed.
	WillRetryUntil time.Time
	// Reason explains in words what happened when the remote reply alone
	// does not ("MTA-STS policy for example.com blocked delivery: no MX host
	// matches the policy"); it appears only in the human-readable part.
	Reason string
	// Expired reports that the recipient failed because its queue lifetime
	// ran out; the text then says how long the message was queued.
	Expired bool
}

// Report is one DSN: the per-message fields and the recipients it covers.
type Report struct {
	// ReportingMTA is our host name (Reporting-MTA: dns; host); it is also
	// the domain of the From address.
	ReportingMTA string
	// EnvID is the RFC 3461 ENVID as received (xtext); optional.
	EnvID string
	// ArrivalDate is when we accepted the message; optional.
	ArrivalDate time.Time
	// Sender is the envelope sender; the DSN is addressed to it.
	Sender string
	// Recipients are the recipients this DSN reports on; at least one.
	Recipients []Recipient
	// RET is the RFC 3461 RET parameter: "FULL", "HDRS" or "".
	RET string
	// MessageID is the DSN's Message-ID, with or without angle brackets;
	// generated when empty.
	MessageID string
	// Date is the DSN's Date; time.Now when zero.
	Date time.Time
}

// Options tune Build.
type Options struct {
	// MaxCopy caps the bytes of the original returned in the DSN; 0 or less
	// means DefaultMaxCopy.
	MaxCopy int
}

const (
	maxLine   = 998 // RFC 5322 §2.1.1, without CRLF
	foldWidth = 78  // RFC 5322 §2.1.1 SHOULD
	maxWord   = 900 // longer words in a field are split
	maxAddr   = 512 // generous: RFC 5321 §4.5.3.1.3 allows 256 for a path
)

var (
	statusRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
	hostRE   = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)$`)
	typeRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)
)

// Build renders the complete DSN message (header section and multipart/report
// body) with CRLF line endings.
//
// original is the original message (header section and body, CRLF; bare LF
// is tolerated and converted) and may be nil, in which case the third part is
// omitted. At most opts.MaxCopy+1 bytes of it are read. It is returned whole
// as message/rfc822 when it is at most MaxCopy bytes, RET is not HDRS, it has
// no 8-bit or NUL bytes and no line over 998 octets; otherwise its header
// section alone is returned as text/rfc822-headers, cut at a line boundary to
// at most MaxCopy bytes.
func Build(r *Report, original io.Reader, opts Options) ([]byte, error) {
	if r == nil {
		return nil, errors.New("dsn: nil report")
	}
	if r.Sender == "" {
		return nil, ErrNullSender
	}
	if err := validate(r); err != nil {
		return nil, err
	}
	maxCopy := opts.MaxCopy
	if maxCopy <= 0 {
		maxCopy = DefaultMaxCopy
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID, err := messageID(r.MessageID, r.ReportingMTA, date)
	if err != nil {
		return nil, err
	}

	var orig *attachment
	if original != nil {
		orig, err = readOriginal(original, maxCopy, strings.EqualFold(r.RET, "HDRS"))
		if err != nil {
			return nil, fmt.Errorf("dsn: read original message: %w", err)
		}
	}

	failed := false
	for _, rc := range r.Recipients {
		failed = failed || rc.Action == ActionFailed
	}
	subject := "Delivery Status Notification (Delay)"
	if failed {
		subject = "Delivery Status Notification (Failure)"
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	text, textCTE := humanText(r, orig, date)
	if err := writePart(mw, []string{
		"Content-Type", "text/plain; charset=" + charset(text),
		"Content-Transfer-Encoding", textCTE,
		"Content-Description", "Notification",
	}, text, textCTE == "quoted-printable"); err != nil {
		return nil, err
	}
	if err := writePart(mw, []string{
		"Content-Type", "message/delivery-status",
		"Content-Description", "Delivery report",
	}, statusFields(r), false); err != nil {
		return nil, err
	}
	if orig != nil {
		h := []string{"Content-Type", "message/rfc822", "Content-Description", "Undelivered message"}
		if orig.headersOnly {
			h = []string{"Content-Type", "text/rfc822-headers", "Content-Description", "Undelivered message headers"}
			if orig.qp {
				h[1] += "; charset=" + charset(string(orig.data))
				h = append(h, "Content-Transfer-Encoding", "quoted-printable")
			}
		}
		if err := writePart(mw, h, string(orig.data), orig.qp); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("dsn: close multipart body: %w", err)
	}

	var m bytes.Buffer
	host := strings.ToLower(r.ReportingMTA)
	writeField(&m, "From", `"Mail Delivery System" <MAILER-DAEMON@`+host+">")
	writeField(&m, "To", "<"+r.Sender+">")
	writeField(&m, "Subject", subject)
	writeField(&m, "Date", date.Format(time.RFC1123Z))
	writeField(&m, "Message-ID", msgID)
	writeField(&m, "Auto-Submitted", "auto-replied") // RFC 3834 §5
	writeField(&m, "MIME-Version", "1.0")
	m.WriteString("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + mw.Boundary() + "\"\r\n")
	writeField(&m, "Content-Transfer-Encoding", "7bit")
	m.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n")
	m.Write(body.Bytes())
	return m.Bytes(), nil
}

func validate(r *Report) error {
	if err := checkAddr(r.Sender); err != nil {
		return fmt.Errorf("dsn: sender: %w", err)
	}
	if !hostRE.MatchString(r.ReportingMTA) || len(r.ReportingMTA) > 255 {
		return fmt.Errorf("dsn: reporting MTA %q is not a host name", r.ReportingMTA)
	}
	switch strings.ToUpper(r.RET) {
	case "", "FULL", "HDRS":
	default:
		return fmt.Errorf("dsn: RET %q is not FULL or HDRS", r.RET)
	}
	if r.EnvID != "" {
		if _, err := xtextDecode(r.EnvID); err != nil {
			return fmt.Errorf("dsn: envelope id: %w", err)
		}
	}
	if len(r.Recipients) == 0 {
		return errors.New("dsn: no recipients")
	}
	for i, rc := range r.Recipients {
		if err := validateRecipient(rc); err != nil {
			return fmt.Errorf("dsn: recipient %d: %w", i, err)
		}
	}
	return nil
}

func validateRecipient(rc Recipient) error {
	if err := checkAddr(rc.Addr); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if !statusRE.MatchString(rc.Status) {
		return fmt.Errorf("status %q is not an enhanced status code", rc.Status)
	}
	// RFC 3464 §2.3.4: the status class agrees with the action.
	switch rc.Action {
	case ActionFailed:
		if rc.Status[0] != '5' {
			return fmt.Errorf("action failed needs a 5.x.x status, not %s", rc.Status)
		}
	case ActionDelayed:
		if rc.Status[0] != '4' {
			return fmt.Errorf("action delayed needs a 4.x.x status, not %s", rc.Status)
		}
	default:
		return fmt.Errorf("action %q is not %q or %q", rc.Action, ActionFailed, ActionDelayed)
	}
	if rc.ORCPT != "" {
		if _, _, err := splitTyped(rc.ORCPT); err != nil {
			return fmt.Errorf("ORCPT: %w", err)
		}
		if _, err := orcptText(rc.ORCPT); err != nil {
			return fmt.Errorf("ORCPT: %w", err)
		}
	}
	if rc.RemoteMTA != "" && !hostRE.MatchString(rc.RemoteMTA) {
		return fmt.Errorf("remote MTA %q is not a host name", rc.RemoteMTA)
	}
	if rc.Diagnostic != "" {
		if _, _, err := splitTyped(rc.Diagnostic); err != nil {
			return fmt.Errorf("diagnostic code: %w", err)
		}
	}
	return nil
}

func checkAddr(a string) error {
	if a == "" {
		return errors.New("empty address")
	}
	if len(a) > maxAddr {
		return fmt.Errorf("address longer than %d bytes", maxAddr)
	}
	if !utf8.ValidString(a) {
		return errors.New("address is not valid UTF-8")
	}
	for _, c := range a {
		if c < 0x20 || c == 0x7f || c == '<' || c == '>' {
			return fmt.Errorf("address %q has a forbidden character", a)
		}
	}
	return nil
}

// splitTyped splits "type; value" (Diagnostic-Code, ORCPT) and checks the
// type is an atom.
func splitTyped(s string) (typ, value string, err error) {
	typ, value, ok := strings.Cut(s, ";")
	typ = strings.TrimSpace(typ)
	if !ok || !typeRE.MatchString(typ) {
		return "", "", fmt.Errorf("%q does not start with a type and a semicolon", s)
	}
	return typ, strings.TrimSpace(value), nil
}

// orcptText renders an ORCPT parameter as the Original-Recipient field value:
// the address type, then the address decoded from xtext (RFC 3461 §4.2: the
// decoded value is printable US-ASCII, as the DSN field requires).
func orcptText(orcpt string) (string, error) {
	typ, x, err := splitTyped(orcpt)
	if err != nil {
		return "", err
	}
	addr, err := xtextDecode(x)
	if err != nil {
		return "", err
	}
	if addr == "" {
		return "", errors.New("empty original recipient")
	}
	return typ + ";" + addr, nil
}

func messageID(id, host string, date time.Time) (string, error) {
	id = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(id), "<"), ">")
	if id == "" {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("dsn: message id: %w", err)
		}
		id = fmt.Sprintf("%d.%s@%s", date.Unix(), hex.EncodeToString(b[:]), strings.ToLower(host))
	}
	left, right, ok := strings.Cut(id, "@")
	if !ok || left == "" || right == "" || strings.ContainsAny(id, "<> \t\r\n\"") || !isPrintableASCII(id) {
		return "", fmt.Errorf("dsn: message id %q is not id-left@id-right", id)
	}
	return "<" + id + ">", nil
}

// statusFields renders the message/delivery-status body (RFC 3464 §2.1).
func statusFields(r *Report) string {
	var b bytes.Buffer
	writeField(&b, "Reporting-MTA", "dns; "+r.ReportingMTA)
	if r.EnvID != "" {
		id, _ := xtextDecode(r.EnvID) // validated
		writeField(&b, "Original-Envelope-Id", id)
	}
	if !r.ArrivalDate.IsZero() {
		writeField(&b, "Arrival-Date", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.ORCPT != "" {
			o, _ := orcptText(rc.ORCPT) // validated
			writeField(&b, "Original-Recipient", o)
		}
		writeField(&b, "Final-Recipient", finalRecipient(rc.Addr))
		writeField(&b, "Action", rc.Action)
		writeField(&b, "Status", rc.Status)
		if rc.RemoteMTA != "" {
			writeField(&b, "Remote-MTA", "dns; "+rc.RemoteMTA)
		}
		if rc.Diagnostic != "" {
			typ, text, _ := splitTyped(rc.Diagnostic) // validated
			writeField(&b, "Diagnostic-Code", typ+"; "+text)
		}
		if !rc.LastAttempt.IsZero() {
			writeField(&b, "Last-Attempt-Date", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if !rc.WillRetryUntil.IsZero() && rc.Action == ActionDelayed {
			writeField(&b, "Will-Retry-Until", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

// finalRecipient is "rfc822; addr" for an ASCII address and "utf-8; xtext"
// (RFC 6533 §3, utf-8-addr-xtext) for an internationalized one.
func finalRecipient(addr string) string {
	if isPrintableASCII(addr) {
		return "rfc822; " + addr
	}
	return "utf-8; " + utf8AddrXtextEncode(addr)
}

// writeField writes "Name: value" CRLF, cleaned and folded.
func writeField(b *bytes.Buffer, name, value string) {
	b.WriteString(fold(name, clean(value, name == "To")))
}

// clean replaces control characters (CR and LF included) with spaces,
// collapses runs of white space and trims it; unless keepUTF8, non-ASCII
// characters become '?'.
func clean(s string, keepUTF8 bool) string {
	var b strings.Builder
	space := false
	for _, c := range s {
		switch {
		case c < 0x20 || c == 0x7f || c == ' ':
			space = true
			continue
		case c >= 0x80 && (!keepUTF8 || c == utf8.RuneError):
			c = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(c)
	}
	return b.String()
}

// fold renders one field, folding at spaces to keep lines near foldWidth and
// always within maxLine (RFC 5322 §2.2.3). Words longer than maxWord are
// split.
func fold(name, value string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(':')
	n := b.Len()
	first := true
	for _, w := range splitWords(value) {
		if !first && n+1+len(w) > foldWidth {
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteByte(' ')
		b.WriteString(w)
		n += 1 + len(w)
		first = false
	}
	b.WriteString("\r\n")
	return b.String()
}

// splitWords splits at spaces, then cuts any word longer than maxWord at
// character boundaries.
func splitWords(s string) []string {
	var out []string
	for _, w := range strings.Fields(s) {
		for len(w) > maxWord {
			i := maxWord
			for i > 0 && !utf8.RuneStart(w[i]) {
				i--
			}
			out = append(out, w[:i])
			w = w[i:]
		}
		out = append(out, w)
	}
	return out
}

func writePart(mw *multipart.Writer, hdr []string, content string, qp bool) error {
	h := textproto.MIMEHeader{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		return fmt.Errorf("dsn: create part: %w", err)
	}
	if !qp {
		if _, err := io.WriteString(pw, content); err != nil {
			return fmt.Errorf("dsn: write part: %w", err)
		}
		return nil
	}
	q := quotedprintable.NewWriter(pw)
	if _, err := io.WriteString(q, content); err != nil {
		return fmt.Errorf("dsn: write part: %w", err)
	}
	if err := q.Close(); err != nil {
		return fmt.Errorf("dsn: write part: %w", err)
	}
	return nil
}

// attachment is what the third part returns of the original.
type attachment struct {
	data        []byte // CRLF line endings
	headersOnly bool
	qp          bool // needs quoted-printable (8-bit, NUL or long lines)
	truncated   bool // the header section was cut to MaxCopy
}

func readOriginal(r io.Reader, maxCopy int, hdrsOnly bool) (*attachment, error) {
	raw, err := io.ReadAll(io.LimitReader(r, int64(maxCopy)+1))
	if err != nil {
		return nil, err
	}
	whole := len(raw) <= maxCopy
	raw = raw[:min(len(raw), maxCopy)]
	data := crlf(raw)
	if whole && !hdrsOnly && sevenBit(data) {
		return &attachment{data: data}, nil
	}
	a := &attachment{headersOnly: true}
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		a.data = data[:i+2]
	} else if whole {
		a.data = data // no body at all
	} else {
		// The header section is longer than MaxCopy: keep whole lines.
		a.truncated = true
		if i := bytes.LastIndex(data, []byte("\r\n")); i >= 0 {
			a.data = data[:i+2]
		} else {
			a.data = append(data, '\r', '\n')
		}
	}
	a.qp = !sevenBit(a.data)
	return a, nil
}

// crlf turns bare LF and bare CR into CRLF.
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// sevenBit reports whether CRLF text b can travel as 7bit (RFC 2045 §2.7):
// no NUL, no 8-bit byte, no line over 998 octets.
func sevenBit(b []byte) bool {
	n := 0
	for _, c := range b {
		switch {
		case c == 0 || c >= 0x80:
			return false
		case c == '\n':
			n = 0
		default:
			n++
			if n > maxLine+1 { // the CR before LF is counted here
				return false
			}
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func charset(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			if utf8.ValidString(s) {
				return "utf-8"
			}
			return "unknown-8bit" // RFC 1428
		}
	}
	return "us-ascii"
}

// humanText renders the text/plain part and its transfer encoding.
func humanText(r *Report, orig *attachment, date time.Time) (text, cte string) {
	var b strings.Builder
	p := func(indent int, s string) { wrap(&b, indent, s) }
	p(0, "This is the mail system at host "+r.ReportingMTA+".")
	b.WriteString("\r\n")
	var failed, delayed []Recipient
	for _, rc := range r.Recipients {
		if rc.Action == ActionFailed {
			failed = append(failed, rc)
		} else {
			delayed = append(delayed, rc)
		}
	}
	if len(failed) > 0 {
		p(0, "Your message could not be delivered to the following recipients. No further attempts will be made.")
		b.WriteString("\r\n")
		for _, rc := range failed {
			recipientText(&b, rc, r.ArrivalDate, date)
		}
	}
	if len(delayed) > 0 {
		p(0, "Delivery of your message to the following recipients has been delayed. The mail system will keep trying; you do not need to send it again.")
		b.WriteString("\r\n")
		for _, rc := range delayed {
			recipientText(&b, rc, r.ArrivalDate, date)
		}
	}
	switch {
	case orig == nil:
	case !orig.headersOnly:
		p(0, "Your message is attached.")
	case orig.truncated:
		p(0, "The first part of your message's header section is attached.")
	default:
		p(0, "The header section of your message is attached.")
	}
	text = b.String()
	if charset(text) != "us-ascii" {
		return text, "quoted-printable"
	}
	return text, "7bit"
}

func recipientText(b *strings.Builder, rc Recipient, arrival, now time.Time) {
	addr := clean(rc.Addr, true)
	if rc.Action == ActionFailed {
		wrap(b, 0, "<"+addr+">: delivery failed permanently (status "+rc.Status+").")
	} else {
		wrap(b, 0, "<"+addr+">: delivery delayed (status "+rc.Status+").")
	}
	if rc.Diagnostic != "" {
		typ, text, _ := splitTyped(rc.Diagnostic)
		who := "The remote server"
		if rc.RemoteMTA != "" {
			who += " " + rc.RemoteMTA
		}
		if strings.EqualFold(typ, "smtp") {
			wrap(b, 4, who+" replied: "+clean(text, true))
		} else {
			wrap(b, 4, who+" reported ("+typ+"): "+clean(text, true))
		}
	} else if rc.RemoteMTA != "" {
		wrap(b, 4, "Last server tried: "+rc.RemoteMTA+".")
	}
	if rc.Reason != "" {
		wrap(b, 4, "Reason: "+clean(rc.Reason, true))
	}
	if !arrival.IsZero() && now.After(arrival) && (rc.Expired || rc.Action == ActionDelayed) {
		q := "The message has been in the queue for " + queueTime(now.Sub(arrival)) + "."
		if rc.Expired {
			q = "The message was in the queue for " + queueTime(now.Sub(arrival)) + ", the longest time allowed; the mail system gave up."
		}
		wrap(b, 4, q)
	}
	if rc.Action == ActionDelayed && !rc.WillRetryUntil.IsZero() {
		wrap(b, 4, "The mail system will keep trying until "+rc.WillRetryUntil.Format(time.RFC1123Z)+".")
	}
	b.WriteString("\r\n")
}

// queueTime renders a duration as "5 days 2 hours", "3 hours 12 minutes",
// "40 minutes" or "less than a minute".
func queueTime(d time.Duration) string {
	unit := func(n int64, s string) string {
		if n == 1 {
			return "1 " + s
		}
		return fmt.Sprintf("%d %ss", n, s)
	}
	days, hours, mins := int64(d/(24*time.Hour)), int64(d/time.Hour)%24, int64(d/time.Minute)%60
	switch {
	case days > 0:
		return unit(days, "day") + " " + unit(hours, "hour")
	case hours > 0:
		return unit(hours, "hour") + " " + unit(mins, "minute")
	case mins > 0:
		return unit(mins, "minute")
	}
	return "less than a minute"
}

// wrap writes s as lines of at most foldWidth columns (words permitting),
// indented, each ending in CRLF; no line exceeds maxLine.
func wrap(b *strings.Builder, indent int, s string) {
	pad := strings.Repeat(" ", indent)
	n := 0
	for _, w := range splitWords(s) {
		if n > 0 && n+1+len(w) > foldWidth {
			b.WriteString("\r\n")
			n = 0
		}
		if n == 0 {
			b.WriteString(pad)
			n = indent
		} else {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	b.WriteString("\r\n")
}
