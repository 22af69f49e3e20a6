package dane

import (
	"errors"
	"fmt"
	"strings"

	"outpost/internal/resolver"
)

// Setting is a Destination Control profile's DANE switch.
type Setting int

// The settings, in the appliance's menu order.
const (
	Off           Setting = iota // "none": no DANE lookups
	Opportunistic                // DANE when the destination is DANE-capable, else go on
	Mandatory                    // DANE or no delivery (defer, then bounce)
)

var settingNames = [...]string{"none", "opportunistic", "mandatory"}

// String is the configuration spelling.
func (s Setting) String() string {
	if s < 0 || int(s) >= len(settingNames) {
		return fmt.Sprintf("dane(%d)", int(s))
	}
	return settingNames[s]
}

// ParseSetting reads "none" (or "no", "off"), "opportunistic" or
// "mandatory".
func ParseSetting(s string) (Setting, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "no", "off":
		return Off, nil
	case "opportunistic":
		return Opportunistic, nil
	case "mandatory":
		return Mandatory, nil
	}
	return Off, fmt.Errorf("unknown DANE setting %q (want none, opportunistic or mandatory)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Setting) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Setting) UnmarshalText(b []byte) error {
	v, err := ParseSetting(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// State is the DNSSEC outcome of one lookup, as the validating resolver
// reported it (RFC 4033 §5, RFC 4035 §4.3).
type State int

// The lookup states. The zero value means the lookup was not made.
const (
	NotLooked      State = iota
	Secure               // records, validated (AD bit set)
	Insecure             // records, not validated (AD bit clear)
	SecureDenial         // NXDOMAIN or NODATA, validated: the records provably do not exist
	InsecureDenial       // NXDOMAIN or NODATA, not validated
	Bogus                // SERVFAIL from the validating resolver: validation failed (RFC 4035 §5.5) or the authority is broken
	Failure              // timeout, REFUSED, no server: indeterminate
)

var stateNames = [...]string{"not looked up", "secure", "insecure", "secure denial", "insecure denial", "bogus (SERVFAIL)", "lookup failure"}

// String names the state for logs and the decision table.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// Failed reports whether the lookup gave no usable answer (Bogus,
// Failure): RFC 7672 §2.1.1 forbids treating it as an answer.
func (s State) Failed() bool { return s == Bogus || s == Failure }

// StateOf classifies a resolver answer. A validating resolver answers
// SERVFAIL for bogus data (RFC 4035 §5.5), so ServFail is Bogus; the other
// temporary outcomes are Failure. The AD bit (Answer.Secure) is only
// trustworthy from a validating resolver on a trusted path (RFC 7672
// §2.1.3; internal/resolver's package doc).
func StateOf(ans resolver.Answer, err error) State {
	if err != nil {
		var e *resolver.Error
		if errors.As(err, &e) && e.Status == resolver.ServFail {
			return Bogus
		}
		if errors.Is(err, resolver.ErrNullMX) {
			// A null MX is an answer (RFC 7505); the caller bounces
			// before DANE is considered.
			if ans.Secure {
				return Secure
			}
			return Insecure
		}
		return Failure
	}
	switch ans.Status {
	case resolver.OK:
		if ans.Secure {
			return Secure
		}
		return Insecure
	case resolver.NXDomain, resolver.NoData:
		if ans.Secure {
			return SecureDenial
		}
		return InsecureDenial
	case resolver.ServFail:
		return Bogus
	}
	return Failure
}

// Inputs are what Decide needs about one MX host.
type Inputs struct {
	Setting Setting
	// MX is the state of the domain's MX lookup. A denial (NODATA) means
	// the domain is its own implicit MX (RFC 5321 §5.1); its security
	// counts as the MX lookup's (RFC 7672 §2.2.2).
	MX State
	// Addr is the state of the host's A/AAAA lookup.
	Addr State
	// TLSA is the state of the `_25._tcp.<host>` TLSA lookup, and Records
	// what it returned.
	TLSA    State
	Records []TLSA
}

// Action is what a delivery to one MX host must do.
type Action int

// The actions.
const (
	// NotDANE: DANE does not apply to this host; MTA-STS (when enabled)
	// or the profile's TLS mode decides.
	NotDANE Action = iota
	// Authenticate: TLS is mandatory and the server must be authenticated
	// by Decision.Records (Verify); never plaintext.
	Authenticate
	// Encrypt: TLS is mandatory but there is nothing to authenticate
	// with (a secure TLSA RRset with no usable record); MTA-STS or a
	// verifying TLS mode may still add verification.
	Encrypt
	// SkipHost: do not connect to this host on this attempt (a lookup it
	// depends on failed); try the next MX.
	SkipHost
	// Defer: DANE is mandatory and this host cannot meet it; do not
	// connect. When no host is left, the message is deferred with
	// Decision.Code and, at the end of its queue life, bounced with
	// Decision.Reason in the DSN.
	Defer
)

var actionNames = [...]string{"not-dane", "authenticate", "encrypt", "skip-host", "defer"}

// String names the action ("authenticate", "skip-host", ...).
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return fmt.Sprintf("action(%d)", int(a))
	}
	return actionNames[a]
}

// Connects reports whether the action allows connecting to the host.
func (a Action) Connects() bool { return a == NotDANE || a == Authenticate || a == Encrypt }

// Decision is the verdict for one MX host.
type Decision struct {
	Action Action
	// Records are the usable TLSA records (Authenticate only).
	Records []TLSA
	// Code is the enhanced status code when the host is not used
	// (SkipHost, Defer): "4.4.3" DNS failure, "4.7.5" TLSA lookup
	// failure, "4.7.4" DANE mandatory but not available.
	Code string
	// Reason is one line for the mail log and the DSN.
	Reason string
	// Clause is the RFC rule applied, e.g. "RFC 7672 §2.2".
	Clause string
}

// Decide applies RFC 7672 §2 to one MX host. It is pure; every branch
// names the clause it implements, and docs/tls-policy.md publishes the
// resulting table.
func Decide(in Inputs) Decision {
	if in.Setting == Off {
		return Decision{Action: NotDANE, Reason: "DANE is not enabled for the destination", Clause: "profile"}
	}
	// notCapable: the host is provably not DANE-capable. Opportunistic
	// goes on to MTA-STS / the TLS mode; Mandatory defers.
	notCapable := func(reason, clause string) Decision {
		if in.Setting == Mandatory {
			return Decision{Action: Defer, Code: "4.7.4", Reason: "DANE is mandatory but " + reason, Clause: clause}
		}
		return Decision{Action: NotDANE, Reason: reason, Clause: clause}
	}
	lookupFailed := func(what string, st State, code, clause string) Decision {
		return Decision{Action: SkipHost, Code: code, Reason: what + " lookup failed: " + st.String(), Clause: clause}
	}

	// 1. The MX lookup (RFC 7672 §2.2.1).
	switch in.MX {
	case Bogus, Failure:
		// RFC 7672 §2.1.1: a bogus or indeterminate answer is a
		// temporary failure, never "no DANE". (The planner defers the
		// whole domain before asking; this row keeps Decide total.)
		return Decision{Action: Defer, Code: "4.4.3", Reason: "MX lookup failed: " + in.MX.String(), Clause: "RFC 7672 §2.1.1"}
	case Insecure, InsecureDenial, NotLooked:
		// RFC 7672 §2.2.1: an insecure MX RRset could have been forged:
		// the hosts it names cannot be DANE-authenticated.
		return notCapable("the MX records are not DNSSEC-signed", "RFC 7672 §2.2.1")
	}

	// 2. The host's address records (RFC 7672 §2.2.2).
	switch in.Addr {
	case Bogus, Failure:
		// RFC 7672 §2.1.1: the host is unusable for now; try the next.
		return lookupFailed("address", in.Addr, "4.4.3", "RFC 7672 §2.1.1")
	case SecureDenial, InsecureDenial:
		return Decision{Action: SkipHost, Code: "4.4.4", Reason: "the MX host has no address records", Clause: "RFC 5321 §5.1"}
	case Insecure, NotLooked:
		// RFC 7672 §2.2.2: TLSA records are only looked up for hosts
		// whose address records are secure.
		return notCapable("the MX host's address records are not DNSSEC-signed", "RFC 7672 §2.2.2")
	}

	// 3. The TLSA records (RFC 7672 §2.2.3).
	switch in.TLSA {
	case Bogus, Failure:
		// RFC 7672 §2.2 and §2.1.1: a failed TLSA lookup for a secure
		// host must not become "no TLSA" (an attacker could cause it):
		// the host is skipped, whatever the setting.
		return lookupFailed("TLSA", in.TLSA, "4.7.5", "RFC 7672 §2.2")
	case SecureDenial:
		// RFC 7672 §2.2: authenticated denial of TLSA records: the host
		// does not do DANE.
		return notCapable("the MX host publishes no TLSA records (authenticated denial)", "RFC 7672 §2.2")
	case Insecure, InsecureDenial, NotLooked:
		// RFC 7672 §2.2: TLSA records from an insecure answer MUST NOT
		// be used.
		return notCapable("the MX host's TLSA records are not DNSSEC-signed", "RFC 7672 §2.2")
	}
	usable := Usable(in.Records)
	if len(usable) == 0 {
		if len(in.Records) == 0 {
			// A secure answer with no records is a denial; treat a
			// malformed "OK with nothing" the same way.
			return notCapable("the MX host publishes no TLSA records (authenticated denial)", "RFC 7672 §2.2")
		}
		// RFC 7672 §2.2 and §3.1.3: a secure TLSA RRset with only
		// unusable records still means the server does TLS: TLS is
		// mandatory, without DANE authentication.
		if in.Setting == Mandatory {
			return Decision{Action: Defer, Code: "4.7.4", Reason: "DANE is mandatory but the MX host's TLSA records are all unusable (" + Params(in.Records) + ")", Clause: "RFC 7672 §3.1.3"}
		}
		return Decision{Action: Encrypt, Reason: "TLSA records present but none usable (" + Params(in.Records) + "): TLS required without DANE authentication", Clause: "RFC 7672 §3.1.3"}
	}
	// RFC 7672 §2.2: usable, secure TLSA records: TLS is mandatory and
	// the server must be authenticated by them (§3).
	return Decision{Action: Authenticate, Records: usable, Reason: "secure TLSA records found (" + Params(usable) + ")", Clause: "RFC 7672 §2.2"}
}

// Params lists records by their parameters ("3 1 1, 2 0 1"), marking a
// record whose parameters are known but whose data cannot match
// ("3 1 1 malformed": a digest of the wrong length).
func Params(rs []TLSA) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
		if !r.Usable() && (r.Usage == DANEEE || r.Usage == DANETA) && r.Selector <= SelectorSPKI && r.MatchingType <= MatchSHA512 {
			s[i] += " malformed"
		}
	}
	return strings.Join(s, ", ")
}
