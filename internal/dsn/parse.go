package dsn

import (
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"
)

// maxParse caps the delivery-status body Parse accepts.
const maxParse = 1 << 20

type field struct {
	name  string
	parts []string // the value's first line, then its continuation lines
}

func (f field) value() string { return strings.Join(f.parts, "") }

// Parse reads the body of a message/delivery-status part (RFC 3464 §2.1):
// a block of per-message fields, then one block per recipient, separated by
// blank lines. It reads what Build writes and is strict about the rest:
// 8-bit data (the message/global-delivery-status of RFC 6533 is not
// supported), malformed or duplicated known fields, a missing Reporting-MTA,
// Final-Recipient, Action or Status are errors. Unknown fields are ignored.
//
// The returned Report carries only what the part holds: ReportingMTA, EnvID
// and ORCPT (re-encoded as xtext, the form Build takes), ArrivalDate and the
// recipients' Addr, Action, Status, RemoteMTA, Diagnostic, LastAttempt and
// WillRetryUntil. White space inside values is collapsed to single spaces.
func Parse(r io.Reader) (*Report, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxParse+1))
	if err != nil {
		return nil, fmt.Errorf("dsn: read delivery status: %w", err)
	}
	if len(data) > maxParse {
		return nil, fmt.Errorf("dsn: delivery status longer than %d bytes", maxParse)
	}
	for i, c := range data {
		if c >= 0x80 || c == 0 {
			return nil, fmt.Errorf("dsn: delivery status has a NUL or 8-bit byte at offset %d", i)
		}
	}
	blocks, err := splitBlocks(string(data))
	if err != nil {
		return nil, err
	}
	if len(blocks) < 2 {
		return nil, errors.New("dsn: delivery status has no per-recipient fields")
	}
	rep := &Report{}
	if err := parseMessageFields(rep, blocks[0]); err != nil {
		return nil, err
	}
	for i, blk := range blocks[1:] {
		rc, err := parseRecipientFields(blk)
		if err != nil {
			return nil, fmt.Errorf("dsn: recipient %d: %w", i, err)
		}
		rep.Recipients = append(rep.Recipients, rc)
	}
	return rep, nil
}

// splitBlocks splits the body into groups of unfolded fields.
func splitBlocks(s string) ([][]field, error) {
	var blocks [][]field
	var cur []field
	for n, line := range strings.Split(s, "\n") {
		line = strings.TrimSuffix(line, "\r")
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 {
				blocks = append(blocks, cur)
				cur = nil
			}
		case line[0] == ' ' || line[0] == '\t':
			if len(cur) == 0 {
				return nil, fmt.Errorf("dsn: line %d: continuation line with no field", n+1)
			}
			// RFC 5322 §2.2.3 unfolding; joined once, later, to stay linear.
			cur[len(cur)-1].parts = append(cur[len(cur)-1].parts, line)
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok || !validFieldName(name) {
				return nil, fmt.Errorf("dsn: line %d: not a field", n+1)
			}
			cur = append(cur, field{strings.ToLower(name), []string{value}})
		}
	}
	if len(cur) > 0 {
		blocks = append(blocks, cur)
	}
	return blocks, nil
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// fieldSet checks known fields for duplicates and cleans values.
type fieldSet map[string]string

func collect(blk []field, known ...string) (fieldSet, error) {
	fs := fieldSet{}
	for _, f := range blk {
		isKnown := false
		for _, k := range known {
			isKnown = isKnown || k == f.name
		}
		if !isKnown {
			continue // RFC 3464 §2.4: extension fields
		}
		if _, dup := fs[f.name]; dup {
			return nil, fmt.Errorf("duplicate %s field", f.name)
		}
		fs[f.name] = clean(f.value(), false)
	}
	return fs, nil
}

func parseMessageFields(rep *Report, blk []field) error {
	fs, err := collect(blk, "reporting-mta", "original-envelope-id", "arrival-date")
	if err != nil {
		return fmt.Errorf("dsn: per-message fields: %w", err)
	}
	v, ok := fs["reporting-mta"]
	if !ok {
		return errors.New("dsn: no Reporting-MTA field")
	}
	if _, rep.ReportingMTA, err = splitTyped(v); err != nil || rep.ReportingMTA == "" {
		return fmt.Errorf("dsn: Reporting-MTA %q: want \"dns; host\"", v)
	}
	if v, ok := fs["original-envelope-id"]; ok {
		rep.EnvID = xtextEncode(v)
	}
	if v, ok := fs["arrival-date"]; ok {
		if rep.ArrivalDate, err = parseDate(v); err != nil {
			return fmt.Errorf("dsn: Arrival-Date: %w", err)
		}
	}
	return nil
}

func parseRecipientFields(blk []field) (Recipient, error) {
	var rc Recipient
	fs, err := collect(blk, "original-recipient", "final-recipient", "action", "status",
		"remote-mta", "diagnostic-code", "last-attempt-date", "will-retry-until")
	if err != nil {
		return rc, err
	}
	for _, k := range []string{"final-recipient", "action", "status"} {
		if _, ok := fs[k]; !ok {
			return rc, fmt.Errorf("no %s field", k)
		}
	}
	if v, ok := fs["original-recipient"]; ok {
		typ, addr, err := splitTyped(v)
		if err != nil || addr == "" {
			return rc, fmt.Errorf("Original-Recipient %q: want \"type;address\"", v)
		}
		rc.ORCPT = typ + ";" + xtextEncode(addr)
	}
	typ, addr, err := splitTyped(fs["final-recipient"])
	if err != nil || addr == "" {
		return rc, fmt.Errorf("Final-Recipient %q: want \"type; address\"", fs["final-recipient"])
	}
	if strings.EqualFold(typ, "utf-8") {
		if addr, err = utf8AddrXtextDecode(addr); err != nil {
			return rc, fmt.Errorf("Final-Recipient: %w", err)
		}
	}
	rc.Addr = addr
	rc.Action = strings.ToLower(fs["action"])
	switch rc.Action {
	case "failed", "delayed", "delivered", "relayed", "expanded": // RFC 3464 §2.3.3
	default:
		return rc, fmt.Errorf("unknown action %q", fs["action"])
	}
	st := fs["status"]
	if i := strings.IndexAny(st, " ("); i >= 0 {
		st = st[:i] // a trailing comment
	}
	if !statusRE.MatchString(st) {
		return rc, fmt.Errorf("status %q is not an enhanced status code", fs["status"])
	}
	rc.Status = st
	if v, ok := fs["remote-mta"]; ok {
		if _, rc.RemoteMTA, err = splitTyped(v); err != nil || rc.RemoteMTA == "" {
			return rc, fmt.Errorf("Remote-MTA %q: want \"dns; host\"", v)
		}
	}
	if v, ok := fs["diagnostic-code"]; ok {
		typ, text, err := splitTyped(v)
		if err != nil {
			return rc, fmt.Errorf("Diagnostic-Code: %w", err)
		}
		rc.Diagnostic = typ + "; " + text
	}
	if v, ok := fs["last-attempt-date"]; ok {
		if rc.LastAttempt, err = parseDate(v); err != nil {
			return rc, fmt.Errorf("Last-Attempt-Date: %w", err)
		}
	}
	if v, ok := fs["will-retry-until"]; ok {
		if rc.WillRetryUntil, err = parseDate(v); err != nil {
			return rc, fmt.Errorf("Will-Retry-Until: %w", err)
		}
	}
	return rc, nil
}

func parseDate(s string) (time.Time, error) {
	t, err := mail.ParseDate(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: %w", s, err)
	}
	return t, nil
}
