package mtasts

import (
	"errors"
	"strings"
)

// TXTRecord is a parsed _mta-sts TXT record (RFC 8461 §3.1).
type TXTRecord struct {
	// ID identifies the policy instance; a change means "fetch again".
	ID string `json:"id"`
}

// Reasons a TXT answer gives no policy. Both are *SyntaxError values
// compared with errors.Is.
var (
	// ErrNoSTSRecord: no TXT record starts with v=STSv1.
	ErrNoSTSRecord = errors.New("no TXT record starts with v=STSv1")
	// ErrMultipleSTSRecords: more than one does (RFC 8461 §3.1: the number
	// of resulting records must be one).
	ErrMultipleSTSRecords = errors.New("more than one TXT record starts with v=STSv1")
)

// isSTSCandidate reports whether a TXT record begins with v=STSv1 followed
// by ";", whitespace or the end. RFC 8461 §3.1 says records that do not
// begin with "v=STSv1;" are discarded, while its ABNF allows whitespace
// before the ";" (erratum 6285); we keep both spellings as candidates so
// that a record with a space is parsed (and accepted) rather than silently
// ignored.
func isSTSCandidate(s string) bool {
	if !strings.HasPrefix(s, "v=STSv1") {
		return false
	}
	rest := s[len("v=STSv1"):]
	return rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}

// SelectTXT applies RFC 8461 §3.1 to all TXT records found at
// _mta-sts.<domain>: records not starting with v=STSv1 are discarded; if the
// number left is not exactly one, or that one is malformed, there is no
// policy (the returned error says which).
func SelectTXT(records []string) (TXTRecord, error) {
	found := -1
	for i, r := range records {
		if !isSTSCandidate(r) {
			continue
		}
		if found >= 0 {
			return TXTRecord{}, &txtSelectError{ErrMultipleSTSRecords}
		}
		found = i
	}
	if found < 0 {
		return TXTRecord{}, &txtSelectError{ErrNoSTSRecord}
	}
	return ParseTXT(records[found])
}

type txtSelectError struct{ err error }

func (e *txtSelectError) Error() string { return "MTA-STS TXT record: " + e.err.Error() }
func (e *txtSelectError) Unwrap() error { return e.err }

func txtErr(msg string) error { return &SyntaxError{What: "TXT record", Msg: msg} }

// ParseTXT parses one TXT record (RFC 8461 §3.1):
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-field-delim = *WSP ";" *WSP
//	sts-version     = %s"v=STSv1"
//	sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//	sts-extension   = sts-ext-name "=" sts-ext-value
//
// The id field is required; a repeated id keeps the first (RFC 8461 §3.2
// "all entries except for the first SHOULD be ignored", applied to the
// record too); unknown extension fields are ignored but must be
// well-formed.
func ParseTXT(s string) (TXTRecord, error) {
	if !strings.HasPrefix(s, "v=STSv1") {
		return TXTRecord{}, txtErr("does not start with v=STSv1 (case-sensitive)")
	}
	parts := strings.Split(s[len("v=STSv1"):], ";")
	if strings.Trim(parts[0], " \t") != "" {
		return TXTRecord{}, txtErr("text after v=STSv1 before the first ';'")
	}
	var rec TXTRecord
	haveID := false
	for i, f := range parts[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			if i == len(parts)-2 { // optional trailing delimiter
				continue
			}
			return TXTRecord{}, txtErr("empty field")
		}
		eq := strings.IndexByte(f, '=')
		if eq < 0 {
			return TXTRecord{}, txtErr("field " + quoteClip(f) + " is not key=value")
		}
		name, val := f[:eq], f[eq+1:]
		if !validExtName(name) {
			return TXTRecord{}, txtErr("invalid field name " + quoteClip(name))
		}
		if name == "id" {
			if haveID {
				continue
			}
			if len(val) == 0 || len(val) > 32 || !allAlnum(val) {
				return TXTRecord{}, txtErr("id " + quoteClip(val) + " is not 1 to 32 letters and digits")
			}
			rec.ID, haveID = val, true
			continue
		}
		// sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
		if len(val) == 0 {
			return TXTRecord{}, txtErr("empty value for " + quoteClip(name))
		}
		for j := 0; j < len(val); j++ {
			if c := val[j]; c < 0x21 || c > 0x7e || c == ';' || c == '=' {
				return TXTRecord{}, txtErr("invalid value for " + quoteClip(name))
			}
		}
	}
	if !haveID {
		return TXTRecord{}, txtErr("missing id field")
	}
	return rec, nil
}

func allAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func quoteClip(s string) string { return "\"" + clip(s) + "\"" }
