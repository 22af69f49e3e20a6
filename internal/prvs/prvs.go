// Package prvs implements bounce address tag validation (BATV,
// draft-levine-smtp-batv-01) with the draft's "prvs" (simple private
// signature) scheme: the envelope sender of outgoing mail is tagged with a
// keyed, dated signature, so that a bounce (MAIL FROM:<>) coming back can
// be told from backscatter caused by someone forging our addresses.
//
// # Tag format
//
// A tagged address is
//
//	prvs=KDDDSSSSSS=local@domain
//
// where
//
//   - K is the key number, one decimal digit: the position of the key in
//     bounce_verification.keys, modulo 10 (so the ten most recent keys have
//     distinct numbers);
//   - DDD is the expiry day: the number of whole UTC days since 1970-01-01
//     of the last day on which the tag is valid, modulo 1000, three decimal
//     digits. A tag made on day D carries D+Lifetime, so it is valid through
//     the end of UTC day D+7;
//   - SSSSSS is the first three octets, in lower-case hexadecimal, of
//     HMAC-SHA1(key, "KDDD" + mailbox), where mailbox is local@domain with
//     its ASCII letters lower-cased (so a relay that changes the case of
//     the recipient does not break the tag; the address handed back by
//     Verify keeps the case in which it was received).
//
// The prefix "prvs" and the hexadecimal digits are matched without regard
// to case. Tags are always written in lower case.
//
// # Validity
//
// Verify accepts a tag when its expiry day lies between today and
// today+Lifetime+1 (one day of clock skew between nodes sharing keys),
// reading DDD modulo 1000 as the draft prescribes, and its signature was
// made by a key that is still accepted:
//
//   - the key in use (the last key whose Added date has come), and keys not
//     yet in use (Added in the future, so nodes can be given a new key
//     before the change-over);
//   - an older key until Grace (7 days) after the key that replaced it was
//     added. Since a tag lives at most 7 days, every tag made with the old
//     key has expired by then anyway; the check also stops a replayed tag
//     whose day number came round again 1000 days later.
//
// Added dates are read as midnight UTC. Keys must be listed oldest first.
//
// # What is never tagged
//
// Tag returns the address unchanged when it is the null sender "", has no
// '@', is already tagged (a syntactically valid prvs tag, whatever key made
// it: never tag twice), has a quoted local part ("a b"@example.com cannot
// take a prefix and stay one quoted string), or when the tagged local part
// would exceed the 64 octets of RFC 5321 §4.5.3.1.1 (a strict receiver
// could refuse the mail, and our own listener refuses such recipients
// before any bounce check). Local parts containing '=' are tagged normally:
// the tag has a fixed length, so "prvs=KDDDSSSSSS=a=b@example.com" parses
// back to "a=b@example.com" without ambiguity.
//
// Addresses written by the appliance in its own order
// ("prvs=joe=123ABCDEFG@example.com") are not recognised: their signature
// scheme is not documented, and keys are not shared with it.
package prvs

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"outpost/internal/config"
)

const (
	// Lifetime is how many days after the day it was made a tag stays
	// valid (through the end of that UTC day).
	Lifetime = 7
	// Grace is how long a replaced key keeps verifying after the key that
	// replaced it was added.
	Grace = 7 * 24 * time.Hour
	// skewDays is the tolerance for tags from a node whose clock is ahead.
	skewDays = 1
	// maxLocal is the RFC 5321 §4.5.3.1.1 local-part limit.
	maxLocal = 64
	// prefixLen is len("prvs=KDDDSSSSSS=").
	prefixLen = len("prvs=") + tagLen + 1
	tagLen    = 10
	day       = 24 * time.Hour
)

// Reasons Verify gives for a refusal.
const (
	ReasonUntagged   = "no tag"
	ReasonMalformed  = "malformed tag"
	ReasonExpired    = "tag expired"
	ReasonUnknownKey = "unknown key"
	ReasonRetiredKey = "signed with a retired key"
	ReasonBadSig     = "bad signature"
	ReasonNoKeys     = "no keys configured"
)

type key struct {
	num    byte // '0'..'9'
	secret []byte
	added  time.Time
}

// Keys is an immutable set of tagging keys, oldest first. A nil *Keys has
// no keys: it tags nothing and verifies nothing. Safe for concurrent use.
type Keys struct {
	keys []key
}

// NewKeys builds the key set from configuration: key numbers are positions
// modulo 10; Added is YYYY-MM-DD (midnight UTC) and must not decrease.
func NewKeys(cfg []config.BVKey) (*Keys, error) {
	k := &Keys{keys: make([]key, 0, len(cfg))}
	for i, c := range cfg {
		if c.Key == "" {
			return nil, fmt.Errorf("prvs: keys[%d]: empty key", i)
		}
		added, err := time.Parse("2006-01-02", c.Added)
		if err != nil {
			return nil, fmt.Errorf("prvs: keys[%d].added %q: want YYYY-MM-DD", i, c.Added)
		}
		if i > 0 && added.Before(k.keys[i-1].added) {
			return nil, fmt.Errorf("prvs: keys[%d].added %s is before keys[%d].added %s: list keys oldest first", i, c.Added, i-1, cfg[i-1].Added)
		}
		k.keys = append(k.keys, key{num: byte('0' + i%10), secret: []byte(c.Key), added: added})
	}
	return k, nil
}

// Len is the number of keys.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// current returns the index of the key that tags at now: the last one
// whose Added time has come, or the first when none has.
func (k *Keys) current(now time.Time) int {
	cur := 0
	for i, ky := range k.keys {
		if !ky.added.After(now) {
			cur = i
		}
	}
	return cur
}

// accepted reports whether key i still verifies at now: it is the newest,
// or the key that replaced it was added less than Grace ago (which also
// covers the key in use and keys not yet in use).
func (k *Keys) accepted(i int, now time.Time) bool {
	return i == len(k.keys)-1 || now.Before(k.keys[i+1].added.Add(Grace))
}

// dayNumber is the number of whole UTC days since 1970-01-01 (floored).
func dayNumber(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

// Tag returns addr with a prvs tag made with the key in use at now, or addr
// unchanged when it must not be tagged (see the package documentation) or
// there are no keys.
func (k *Keys) Tag(addr string, now time.Time) string {
	if k.Len() == 0 || addr == "" || IsTagged(addr) {
		return addr
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return addr
	}
	local := addr[:at]
	if strings.HasPrefix(local, `"`) || len(local)+prefixLen > maxLocal {
		return addr
	}
	ky := k.keys[k.current(now)]
	exp := (dayNumber(now) + Lifetime) % 1000
	if exp < 0 {
		exp += 1000
	}
	kd := fmt.Sprintf("%c%03d", ky.num, exp)
	return "prvs=" + kd + sign(ky.secret, kd, addr) + "=" + addr
}

// sign is the first three octets of HMAC-SHA1(secret, kddd+lower(addr)) in
// lower-case hex.
func sign(secret []byte, kddd, addr string) string {
	return hex.EncodeToString(signRaw(secret, kddd, addr))
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// parsed is a syntactically valid tagged address.
type parsed struct {
	num  byte   // key number '0'..'9'
	ddd  int64  // expiry day modulo 1000
	kddd string // "KDDD" as written (digits only)
	sig  []byte // 3 octets
	orig string // the untagged address
}

// parse splits a tagged address; ok is false when addr does not carry a
// well-formed prvs tag in front of a non-empty local part and a domain.
func parse(addr string) (p parsed, ok bool) {
	if len(addr) < prefixLen || !strings.EqualFold(addr[:5], "prvs=") || addr[prefixLen-1] != '=' {
		return p, false
	}
	tag := addr[5 : 5+tagLen]
	for i := 0; i < 4; i++ {
		if tag[i] < '0' || tag[i] > '9' {
			return p, false
		}
	}
	sig, err := hex.DecodeString(tag[4:])
	if err != nil {
		return p, false
	}
	orig := addr[prefixLen:]
	at := strings.LastIndexByte(orig, '@')
	if at <= 0 || at == len(orig)-1 {
		return p, false
	}
	p.num = tag[0]
	p.ddd = int64(tag[1]-'0')*100 + int64(tag[2]-'0')*10 + int64(tag[3]-'0')
	p.kddd = tag[:4]
	p.sig = sig
	p.orig = orig
	return p, true
}

// IsTagged reports whether addr carries a syntactically valid prvs tag
// (whether or not its signature verifies).
func IsTagged(addr string) bool {
	_, ok := parse(addr)
	return ok
}

// Strip returns addr without its prvs tag, or addr itself when it has none.
// It does not check the signature.
func Strip(addr string) string {
	if p, ok := parse(addr); ok {
		return p.orig
	}
	return addr
}

// Verify checks a tagged address at now. original is addr without its tag
// (addr itself when untagged); only ok authorises anything. reason says
// why ok is false (one of the Reason constants) and is "" when ok.
func (k *Keys) Verify(addr string, now time.Time) (original string, ok bool, reason string) {
	p, tagged := parse(addr)
	if !tagged {
		if len(addr) >= 5 && strings.EqualFold(addr[:5], "prvs=") {
			return addr, false, ReasonMalformed
		}
		return addr, false, ReasonUntagged
	}
	if k.Len() == 0 {
		return p.orig, false, ReasonNoKeys
	}
	// Days from today to the expiry day, read modulo 1000.
	ahead := (p.ddd - dayNumber(now)%1000 + 2000) % 1000
	if ahead > Lifetime+skewDays {
		return p.orig, false, ReasonExpired
	}
	found, retired := false, false
	for i := range k.keys {
		ky := &k.keys[i]
		if ky.num != p.num {
			continue
		}
		found = true
		if !hmac.Equal(p.sig, signRaw(ky.secret, p.kddd, p.orig)) {
			continue
		}
		if k.accepted(i, now) {
			return p.orig, true, ""
		}
		retired = true
	}
	switch {
	case !found:
		return p.orig, false, ReasonUnknownKey
	case retired:
		return p.orig, false, ReasonRetiredKey
	}
	return p.orig, false, ReasonBadSig
}

// Untag returns addr without its tag when the signature was made by any
// configured key, ignoring the tag's expiry and key retirement. It is for
// mail with a real sender (an auto-reply, say) to a tagged address, which
// the appliance also delivers with older keys and expired tags. ok is
// false, and addr returned unchanged, when the tag is missing or forged.
func (k *Keys) Untag(addr string) (original string, ok bool) {
	p, tagged := parse(addr)
	if !tagged || k.Len() == 0 {
		return addr, false
	}
	for i := range k.keys {
		ky := &k.keys[i]
		if ky.num == p.num && hmac.Equal(p.sig, signRaw(ky.secret, p.kddd, p.orig)) {
			return p.orig, true
		}
	}
	return addr, false
}

// signRaw is the first three octets of HMAC-SHA1(secret, kddd+lower(addr)).
func signRaw(secret []byte, kddd, addr string) []byte {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(kddd))
	m.Write([]byte(asciiLower(addr)))
	return m.Sum(nil)[:3]
}

// ErrInvalidBounce is what Checker.Check returns (wrapped with the reason)
// for a bounce it refuses.
var ErrInvalidBounce = errors.New("invalid bounce")

// Checker decides bounces (MAIL FROM:<>) at RCPT time. Its Check method
// fits smtpd.Config.BounceCheck.
type Checker struct {
	// Keys verify the tags.
	Keys *Keys
	// Domains are ours: an entry matches that domain exactly, and one
	// starting with '.' matches every subdomain (".example.com" matches
	// "a.example.com", not "example.com"). Recipients in other domains
	// pass unchecked. Empty means every recipient is checked.
	Domains []string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Check decides one recipient of a bounce: deliverTo is the address to
// deliver to (the recipient without its tag when the tag is valid, the
// recipient unchanged when it is not in our domains); err, wrapping
// ErrInvalidBounce with the reason, refuses it.
func (c *Checker) Check(rcpt string) (deliverTo string, err error) {
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 || !c.ours(rcpt[at+1:]) {
		return rcpt, nil
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	orig, ok, reason := c.Keys.Verify(rcpt, now)
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrInvalidBounce, reason)
	}
	return orig, nil
}

func (c *Checker) ours(domain string) bool {
	if len(c.Domains) == 0 {
		return true
	}
	for _, d := range c.Domains {
		if strings.HasPrefix(d, ".") {
			if len(domain) > len(d) && strings.EqualFold(domain[len(domain)-len(d):], d) {
				return true
			}
		} else if strings.EqualFold(domain, d) {
			return true
		}
	}
	return false
}
