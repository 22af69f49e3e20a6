package smtpd

import (
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// rejection is a refused address: the reply and the reason for the mail log.
type rejection struct {
	code   int
	enh    smtp.EnhancedCode
	text   string
	reason string // "Rejected by <reason>" in the mail log
}

func (r *rejection) err() *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.code, EnhancedCode: r.enh, Message: r.text}
}

func reject(code int, enh smtp.EnhancedCode, text, reason string) *rejection {
	return &rejection{code: code, enh: enh, text: text, reason: reason}
}

// checkAddress decides whether addr (a mailbox as go-smtp parsed it: source
// route stripped, quotes removed) is acceptable as a recipient, or as the
// reverse path when sender is true. utf8 says whether the transaction was
// opened with SMTPUTF8.
//
// The rules, beyond RFC 5321 §4.1.2 syntax, close every way a client could
// choose the next hop or hide a second address in one:
//
//   - exactly one '@' ("u@d@other", and a quoted "a@b"@c, are refused);
//   - recipients: no '%' (%-hack) and no '!' (bang path) in the local part;
//   - the local part must be a dot-atom: a quoted local part is accepted
//     only when its content is itself a dot-atom (the same mailbox), so an
//     address never reaches the spool in a form that needs re-quoting;
//   - no address literals ("u@[192.0.2.1]"): an outbound gateway routes by
//     the recipient domain's MX and its security policy, which a literal
//     would bypass;
//   - the domain must be a fully-qualified name (two labels or more, LDH,
//     1–63 octets per label, no trailing dot, not all-numeric at the top);
//     UTF-8 labels only under SMTPUTF8 (RFC 6531 §3.3);
//   - lengths: local part 64, domain 255, path 256 (RFC 5321 §4.5.3.1).
func checkAddress(addr string, utf8OK, sender bool) *rejection {
	const (
		syntax = "address syntax"
		policy = "address policy"
	)
	badMailbox := smtp.EnhancedCode{5, 1, 3}
	badDomain := smtp.EnhancedCode{5, 1, 2}
	if sender {
		badMailbox = smtp.EnhancedCode{5, 1, 7}
		badDomain = smtp.EnhancedCode{5, 1, 8}
	}
	if len(addr)+2 > 256 { // RFC 5321 §4.5.3.1.3, counting "<" and ">"
		return reject(501, badMailbox, "Path too long", syntax+" (path too long)")
	}
	if !utf8.ValidString(addr) {
		return reject(501, badMailbox, "Address is not valid UTF-8", syntax+" (invalid UTF-8)")
	}
	if !utf8OK && !isASCII(addr) {
		// RFC 6531 §3.7.4.1
		return reject(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8", syntax+" (non-ASCII without SMTPUTF8)")
	}
	at := strings.IndexByte(addr, '@')
	if at < 0 {
		return reject(501, badMailbox, "Address must be local-part@domain", syntax+" (no domain)")
	}
	if strings.Count(addr, "@") > 1 {
		return reject(553, badMailbox, "Only one @ allowed: routing through addresses is not allowed", policy+" (multiple @)")
	}
	local, domain := addr[:at], addr[at+1:]
	if local == "" {
		return reject(501, badMailbox, "Empty local part", syntax+" (empty local part)")
	}
	if domain == "" {
		return reject(501, badDomain, "Empty domain", syntax+" (empty domain)")
	}
	if len(local) > 64 { // RFC 5321 §4.5.3.1.1
		return reject(553, badMailbox, "Local part too long", syntax+" (local part too long)")
	}
	if !sender {
		if strings.ContainsRune(local, '%') {
			return reject(553, badMailbox, "Percent-hack routing is not allowed", policy+" (percent hack)")
		}
		if strings.ContainsRune(local, '!') {
			return reject(553, badMailbox, "Bang-path routing is not allowed", policy+" (bang path)")
		}
	}
	if !isDotAtom(local) {
		return reject(553, badMailbox, "Local part must be a dot-atom (quoted local parts are not accepted)", syntax+" (local part not a dot-atom)")
	}
	if strings.HasPrefix(domain, "[") {
		return reject(553, badDomain, "Address literals are not accepted", policy+" (address literal)")
	}
	if why := checkDomain(domain); why != "" {
		return reject(553, badDomain, "Invalid domain: "+why, syntax+" (invalid domain: "+why+")")
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isAtext reports RFC 5322 §3.2.3 atext, extended by RFC 6532 §3.2 with
// non-ASCII UTF-8 (callers check SMTPUTF8 separately).
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDotAtom reports RFC 5321 §4.1.2 Dot-string: atoms separated by single
// dots, no leading or trailing dot.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// checkDomain returns why d is not an acceptable fully-qualified domain, or
// "" when it is (RFC 5321 §4.1.2 Domain, RFC 1035 §2.3.4 lengths).
func checkDomain(d string) string {
	if len(d) > 255 { // RFC 5321 §4.5.3.1.2
		return "too long"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "not fully qualified"
	}
	for _, l := range labels {
		if l == "" {
			return "empty label"
		}
		if len(l) > 63 {
			return "label too long"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "label starts or ends with a hyphen"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c >= 0x80) {
				return "invalid character"
			}
		}
	}
	top := labels[len(labels)-1]
	if strings.Trim(top, "0123456789") == "" {
		return "numeric top-level label"
	}
	return ""
}
