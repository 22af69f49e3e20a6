// Package reply is the typed SMTP outcome used everywhere a result crosses a
// package boundary: a basic code, an enhanced status code (RFC 3463) and the
// text. It is a leaf package.
//
// A Reply is temporary unless proven permanent: code 5xx is permanent, every
// other non-2xx outcome (including local errors with no code) is temporary.
package reply

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is an SMTP reply, either received from a peer or made locally.
type Reply struct {
	Code     int    // e.g. 250, 451, 550; 0 means no reply was received
	Enhanced string // e.g. "4.4.1"; "" when unknown
	Text     string // one line; multi-line replies are joined with "; "
	// Remote is true when a peer sent this reply; false when Outpost made it.
	Remote bool
}

// New makes a local reply.
func New(code int, enhanced, format string, args ...any) *Reply {
	return &Reply{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}
}

// Error implements error so a Reply can travel as one.
func (r *Reply) Error() string { return r.String() }

// String renders "451 4.3.0 text".
func (r *Reply) String() string {
	var b strings.Builder
	if r.Code != 0 {
		b.WriteString(strconv.Itoa(r.Code))
		b.WriteByte(' ')
	}
	if r.Enhanced != "" {
		b.WriteString(r.Enhanced)
		b.WriteByte(' ')
	}
	b.WriteString(r.Text)
	return b.String()
}

// Success reports a 2xx reply.
func (r *Reply) Success() bool { return r.Code >= 200 && r.Code < 300 }

// Permanent reports a 5xx reply.
func (r *Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// Temporary reports anything that is neither success nor permanent.
func (r *Reply) Temporary() bool { return !r.Success() && !r.Permanent() }

// Class returns the enhanced code, or one derived from the basic code
// ("2.0.0", "4.0.0", "5.0.0") when the peer sent none.
func (r *Reply) Class() string {
	if r.Enhanced != "" {
		return r.Enhanced
	}
	switch {
	case r.Success():
		return "2.0.0"
	case r.Permanent():
		return "5.0.0"
	default:
		return "4.0.0"
	}
}

// CodeString is the three-digit code as text, "000" when no reply was
// received (the appliance's convention in Delayed/Bounced lines).
func (r *Reply) CodeString() string {
	if r.Code == 0 {
		return "000"
	}
	return strconv.Itoa(r.Code)
}

// Parse splits "250 2.0.0 Ok" style text (code already known) into the
// enhanced code and the rest.
func Parse(code int, text string, remote bool) *Reply {
	r := &Reply{Code: code, Text: text, Remote: remote}
	if f, rest, ok := strings.Cut(text, " "); ok && isEnhanced(f) {
		r.Enhanced, r.Text = f, rest
	} else if isEnhanced(text) {
		r.Enhanced, r.Text = text, ""
	}
	return r
}

func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 {
			return false
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}
