package prvs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"outpost/internal/config"
)

const (
	secretA = "0123456789abcdef"
	secretB = "fedcba9876543210-second"
)

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustKeys(t testing.TB, ks ...config.BVKey) *Keys {
	t.Helper()
	k, err := NewKeys(ks)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The key set of a rotation: A in use from 2024-01-01, B from 2024-03-01,
// so A keeps verifying until 2024-03-08T00:00Z.
func rotated(t testing.TB) *Keys {
	return mustKeys(t, config.BVKey{Key: secretA, Added: "2024-01-01"}, config.BVKey{Key: secretB, Added: "2024-03-01"})
}

func onlyA(t testing.TB) *Keys { return mustKeys(t, config.BVKey{Key: secretA, Added: "2024-01-01"}) }

// TestKnownAnswer pins the scheme: HMAC-SHA1(key, "KDDD"+mailbox), first
// three octets in hex. The value was computed independently (Python's
// hmac module): day 19792 is 2024-03-10, expiry (19792+7) mod 1000 = 799.
func TestKnownAnswer(t *testing.T) {
	got := onlyA(t).Tag("joe@example.com", date("2024-03-10T12:00:00Z"))
	if want := "prvs=0799f24136=joe@example.com"; got != want {
		t.Fatalf("Tag = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	made := date("2024-03-10T12:00:00Z") // day D; valid through the end of D+7
	a, r := onlyA(t), rotated(t)
	tagA := a.Tag("joe@example.com", made)
	forged := tagA[:len("prvs=0799")] + "000000" + tagA[len("prvs=0799f24136"):]
	otherKey := mustKeys(t, config.BVKey{Key: "not-our-key-at-all", Added: "2024-01-01"}).Tag("joe@example.com", made)

	tests := []struct {
		name   string
		keys   *Keys
		addr   string
		now    time.Time
		orig   string
		ok     bool
		reason string
	}{
		{"same day", a, tagA, made, "joe@example.com", true, ""},
		{"last valid second", a, tagA, date("2024-03-17T23:59:59Z"), "joe@example.com", true, ""},
		{"expired", a, tagA, date("2024-03-18T00:00:00Z"), "joe@example.com", false, ReasonExpired},
		{"long expired", a, tagA, date("2024-09-01T00:00:00Z"), "joe@example.com", false, ReasonExpired},
		{"one day of skew", a, tagA, date("2024-03-09T12:00:00Z"), "joe@example.com", true, ""},
		{"two days early", a, tagA, date("2024-03-08T12:00:00Z"), "joe@example.com", false, ReasonExpired},
		{"forged signature", a, forged, made, "joe@example.com", false, ReasonBadSig},
		{"forged original", a, strings.Replace(tagA, "joe@", "eve@", 1), made, "eve@example.com", false, ReasonBadSig},
		{"forged date", a, strings.Replace(tagA, "=0799", "=0800", 1), made, "joe@example.com", false, ReasonBadSig},
		{"wrong key, same number", a, otherKey, made, "joe@example.com", false, ReasonBadSig},
		{"unknown key number", a, "prvs=5799f24136=joe@example.com", made, "joe@example.com", false, ReasonUnknownKey},
		{"untagged", a, "joe@example.com", made, "joe@example.com", false, ReasonUntagged},
		{"malformed: short tag", a, "prvs=0799f2413=joe@example.com", made, "prvs=0799f2413=joe@example.com", false, ReasonMalformed},
		{"malformed: not hex", a, "prvs=0799f2413z=joe@example.com", made, "prvs=0799f2413z=joe@example.com", false, ReasonMalformed},
		{"malformed: no domain", a, "prvs=0799f24136=joe", made, "prvs=0799f24136=joe", false, ReasonMalformed},
		{"malformed: empty local", a, "prvs=0799f24136=@example.com", made, "prvs=0799f24136=@example.com", false, ReasonMalformed},
		{"upper-case prefix and hex", a, "PRVS=0799F24136=joe@example.com", made, "joe@example.com", true, ""},
		{"mixed-case prefix", a, "Prvs=0799f24136=joe@example.com", made, "joe@example.com", true, ""},
		{"domain case changed", a, "prvs=0799f24136=joe@EXAMPLE.com", made, "joe@EXAMPLE.com", true, ""},
		{"local part case changed", a, "prvs=0799f24136=Joe@example.com", made, "Joe@example.com", true, ""},
		{"no keys", nil, tagA, made, "joe@example.com", false, ReasonNoKeys},
		{"rotated set: A retired on 2024-03-08", r, tagA, made, "joe@example.com", false, ReasonRetiredKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, ok, reason := tt.keys.Verify(tt.addr, tt.now)
			if orig != tt.orig || ok != tt.ok || reason != tt.reason {
				t.Errorf("Verify(%q) = %q, %v, %q; want %q, %v, %q", tt.addr, orig, ok, reason, tt.orig, tt.ok, tt.reason)
			}
		})
	}
}

// TestRotation: after B is added, new tags use B; tags made with A keep
// verifying for Grace after B's Added date, then not even fresh ones do.
func TestRotation(t *testing.T) {
	r := rotated(t)
	if got := r.Tag("joe@example.com", date("2024-02-29T23:59:59Z")); !strings.HasPrefix(got, "prvs=0") {
		t.Errorf("before B was added, Tag = %q, want key 0", got)
	}
	if got := r.Tag("joe@example.com", date("2024-03-01T00:00:00Z")); !strings.HasPrefix(got, "prvs=1") {
		t.Errorf("once B was added, Tag = %q, want key 1", got)
	}

	// A node that still tags with A alone (it was given B late).
	a := onlyA(t)
	tests := []struct {
		name       string
		made, now  time.Time
		ok         bool
		wantReason string
	}{
		{"before rotation", date("2024-02-28T12:00:00Z"), date("2024-03-03T12:00:00Z"), true, ""},
		{"within grace", date("2024-03-05T12:00:00Z"), date("2024-03-07T23:59:59Z"), true, ""},
		{"grace just over", date("2024-03-05T12:00:00Z"), date("2024-03-08T00:00:00Z"), false, ReasonRetiredKey},
		{"after grace", date("2024-03-09T12:00:00Z"), date("2024-03-09T12:00:01Z"), false, ReasonRetiredKey},
		{"tag from before rotation expires on its own", date("2024-02-28T12:00:00Z"), date("2024-03-07T00:00:00Z"), false, ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag := a.Tag("joe@example.com", tt.made)
			orig, ok, reason := r.Verify(tag, tt.now)
			if ok != tt.ok || reason != tt.wantReason || orig != "joe@example.com" {
				t.Errorf("Verify(%q at %s) = %q, %v, %q; want ok %v, reason %q", tag, tt.now, orig, ok, reason, tt.ok, tt.wantReason)
			}
		})
	}

	// The new key verifies its own tags, and so does a node that has B
	// listed but not yet in use (pre-staged: Added in the future).
	tagB := r.Tag("joe@example.com", date("2024-03-02T00:00:00Z"))
	if _, ok, reason := r.Verify(tagB, date("2024-03-05T00:00:00Z")); !ok {
		t.Errorf("B's tag refused: %s", reason)
	}
	if got := r.Tag("joe@example.com", date("2024-02-20T00:00:00Z")); !strings.HasPrefix(got, "prvs=0") {
		t.Errorf("B pre-staged: Tag = %q, want key 0 until B's date", got)
	}
	early := r.Tag("joe@example.com", date("2024-03-01T00:00:00Z")) // made by a node whose clock is ahead
	if _, ok, reason := r.Verify(early, date("2024-02-29T20:00:00Z")); !ok {
		t.Errorf("pre-staged key refused: %s", reason)
	}
}

// TestReplayAfterWrap: DDD is modulo 1000, so a tag comes round again
// 1000 days later; with the key retired since, it is refused.
func TestReplayAfterWrap(t *testing.T) {
	made := date("2021-06-01T12:00:00Z")
	tag := onlyA(t).Tag("joe@example.com", made)
	later := made.Add(1000 * day)
	keys := mustKeys(t, config.BVKey{Key: secretA, Added: "2021-01-01"}, config.BVKey{Key: secretB, Added: "2022-01-01"})
	if _, ok, reason := keys.Verify(tag, later); ok || reason != ReasonRetiredKey {
		t.Errorf("replay after 1000 days: ok %v reason %q, want refused as %q", ok, reason, ReasonRetiredKey)
	}
}

// TestDayWrap: a tag whose expiry day number wraps past 999 stays valid
// for its whole life.
func TestDayWrap(t *testing.T) {
	a := onlyA(t)
	made := time.Unix(19995*86400+3600, 0).UTC() // day 19995: expiry 20002 -> DDD 002
	tag := a.Tag("joe@example.com", made)
	if !strings.HasPrefix(tag, "prvs=0002") {
		t.Fatalf("Tag = %q, want DDD 002", tag)
	}
	for d := 0; d <= Lifetime; d++ {
		if _, ok, reason := a.Verify(tag, made.Add(time.Duration(d)*day)); !ok {
			t.Errorf("day +%d: refused: %s", d, reason)
		}
	}
	if _, ok, _ := a.Verify(tag, made.Add((Lifetime+1)*day)); ok {
		t.Errorf("day +%d: accepted", Lifetime+1)
	}
}

func TestTag(t *testing.T) {
	a := onlyA(t)
	now := date("2024-03-10T12:00:00Z")
	local48 := strings.Repeat("x", 48)
	local49 := strings.Repeat("x", 49)
	tests := []struct {
		name   string
		addr   string
		tagged bool // false: returned unchanged
	}{
		{"plain", "joe@example.com", true},
		{"null sender", "", false},
		{"no domain", "postmaster", false},
		{"empty local part", "@example.com", false},
		{"empty domain", "joe@", false},
		{"already tagged", "prvs=0799f24136=joe@example.com", false},
		{"already tagged, upper case", "PRVS=0799F24136=joe@example.com", false},
		{"already tagged with an unknown key", "prvs=9123abcdef=joe@example.com", false},
		{"quoted local part", `"joe smith"@example.com`, false},
		{"local part with '='", "a=b@example.com", true},
		{"local part ending in '='", "ab=@example.com", true},
		{"looks like prvs but is not a tag", "prvs=joe@example.com", true},
		{"appliance order is not our tag", "prvs=joe=123ABCDEFG@example.com", true},
		{"local part of 48 octets fits in 64", local48 + "@example.com", true},
		{"local part of 49 octets would not", local49 + "@example.com", false},
		{"UTF-8 local part", "jöe@example.com", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := a.Tag(tt.addr, now)
			if !tt.tagged {
				if got != tt.addr {
					t.Fatalf("Tag(%q) = %q, want unchanged", tt.addr, got)
				}
				return
			}
			if got == tt.addr || !IsTagged(got) {
				t.Fatalf("Tag(%q) = %q, want a tag", tt.addr, got)
			}
			if again := a.Tag(got, now.Add(day)); again != got {
				t.Errorf("tagged twice: %q", again)
			}
			if local := got[:strings.LastIndexByte(got, '@')]; len(local) > 64 {
				t.Errorf("tagged local part is %d octets", len(local))
			}
			orig, ok, reason := a.Verify(got, now)
			if !ok || orig != tt.addr {
				t.Errorf("Verify(%q) = %q, %v, %q; want %q", got, orig, ok, reason, tt.addr)
			}
			if s := Strip(got); s != tt.addr {
				t.Errorf("Strip(%q) = %q", got, s)
			}
			if u, ok := a.Untag(got); !ok || u != tt.addr {
				t.Errorf("Untag(%q) = %q, %v", got, u, ok)
			}
		})
	}
	if got := (*Keys)(nil).Tag("joe@example.com", now); got != "joe@example.com" {
		t.Errorf("no keys: Tag = %q", got)
	}
}

// TestUntag ignores expiry and retirement but not forgery.
func TestUntag(t *testing.T) {
	tag := onlyA(t).Tag("joe@example.com", date("2023-01-01T00:00:00Z"))
	r := rotated(t)
	if _, ok, _ := r.Verify(tag, date("2024-06-01T00:00:00Z")); ok {
		t.Fatal("old tag verified")
	}
	if u, ok := r.Untag(tag); !ok || u != "joe@example.com" {
		t.Errorf("Untag(old tag) = %q, %v", u, ok)
	}
	forged := tag[:len(tag)-len("=joe@example.com")-1] + "0=joe@example.com"
	if forged == tag {
		forged = strings.Replace(tag, "=joe@", "=eve@", 1)
	}
	if u, ok := r.Untag(forged); ok || u != forged {
		t.Errorf("Untag(forged %q) = %q, %v", forged, u, ok)
	}
	if u, ok := r.Untag("joe@example.com"); ok || u != "joe@example.com" {
		t.Errorf("Untag(untagged) = %q, %v", u, ok)
	}
}

func TestNewKeys(t *testing.T) {
	tests := []struct {
		name string
		in   []config.BVKey
		err  string
	}{
		{"none", nil, ""},
		{"two", []config.BVKey{{Key: secretA, Added: "2024-01-01"}, {Key: secretB, Added: "2024-01-01"}}, ""},
		{"empty key", []config.BVKey{{Key: "", Added: "2024-01-01"}}, "keys[0]: empty key"},
		{"bad date", []config.BVKey{{Key: secretA, Added: "01/02/2024"}}, `keys[0].added "01/02/2024"`},
		{"decreasing", []config.BVKey{{Key: secretA, Added: "2024-02-01"}, {Key: secretB, Added: "2024-01-01"}}, "oldest first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := NewKeys(tt.in)
			if tt.err == "" {
				if err != nil || k.Len() != len(tt.in) {
					t.Fatalf("NewKeys: %v, %d keys", err, k.Len())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("NewKeys error %v, want %q", err, tt.err)
			}
		})
	}
}

// TestKeyNumbers: numbers are positions modulo 10, so the eleventh key is
// number 0 again and the first (long retired) no longer verifies.
func TestKeyNumbers(t *testing.T) {
	var cfg []config.BVKey
	for i := 0; i < 11; i++ {
		cfg = append(cfg, config.BVKey{Key: strings.Repeat(string(rune('a'+i)), 16), Added: time.Date(2024, 1, 1+30*i, 0, 0, 0, 0, time.UTC).Format("2006-01-02")})
	}
	k := mustKeys(t, cfg...)
	now := date("2025-01-01T00:00:00Z")
	tag := k.Tag("joe@example.com", now)
	if !strings.HasPrefix(tag, "prvs=0") {
		t.Fatalf("Tag = %q, want key number 0 for the eleventh key", tag)
	}
	if _, ok, reason := k.Verify(tag, now); !ok {
		t.Fatalf("refused: %s", reason)
	}
	first := mustKeys(t, cfg[0]).Tag("joe@example.com", now)
	if _, ok, reason := k.Verify(first, now); ok || reason != ReasonRetiredKey {
		t.Errorf("first key: ok %v, reason %q", ok, reason)
	}
}

func TestChecker(t *testing.T) {
	now := date("2024-03-10T12:00:00Z")
	a := onlyA(t)
	c := &Checker{Keys: a, Domains: []string{"example.com", ".corp.example"}, Now: func() time.Time { return now }}
	tests := []struct {
		name, rcpt, want string
		bad              bool
	}{
		{"tagged, ours", a.Tag("joe@example.com", now), "joe@example.com", false},
		{"tagged, ours, other case", strings.ToUpper(a.Tag("joe@example.com", now)), "JOE@EXAMPLE.COM", false},
		{"tagged subdomain", a.Tag("joe@mail.corp.example", now), "joe@mail.corp.example", false},
		{"untagged, ours", "joe@example.com", "", true},
		{"untagged, ours by case", "joe@Example.COM", "", true},
		{"untagged subdomain", "joe@mail.corp.example", "", true},
		{"forged", "prvs=0799000000=joe@example.com", "", true},
		{"expired", a.Tag("joe@example.com", now.Add(-9*day)), "", true},
		{"not ours", "joe@elsewhere.example", "joe@elsewhere.example", false},
		{"the parent of a dot entry is not ours", "joe@corp.example", "joe@corp.example", false},
		{"suffix without a dot is not ours", "joe@notexample.com", "joe@notexample.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Check(tt.rcpt)
			if tt.bad {
				if err == nil || !errors.Is(err, ErrInvalidBounce) {
					t.Fatalf("Check(%q) = %q, %v; want ErrInvalidBounce", tt.rcpt, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Check(%q) = %q, %v; want %q", tt.rcpt, got, err, tt.want)
			}
		})
	}
	all := &Checker{Keys: a}
	if _, err := all.Check("joe@elsewhere.example"); err == nil {
		t.Error("no Domains: an untagged bounce was accepted")
	}
}
