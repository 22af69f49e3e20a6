package prvs

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary addresses and clocks to Verify, Tag, Strip and
// Untag. Properties: nothing panics; an accepted address is tagged and its
// original is what Strip and Untag give; whatever Tag changes verifies back
// to the input at the same instant and is never tagged again. The seed
// corpus is in testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	base := date("2024-03-10T12:00:00Z").Unix()
	f.Add("prvs=0799f24136=joe@example.com", int64(0))
	f.Add("joe@example.com", int64(0))
	f.Add("", int64(0))
	f.Add("prvs=0799f24136=joe@example.com", int64(8*86400))
	f.Add("PRVS=0799F24136=a=b@example.com", int64(-86400))
	f.Add(`"joe smith"@example.com`, int64(0))
	f.Add("prvs=", int64(0))
	f.Add("prvs=0799f24136=@", int64(0))
	f.Add("prvs=0799f24136=prvs=0799f24136=joe@example.com", int64(1000*86400))
	k := rotated(f)
	f.Fuzz(func(t *testing.T, addr string, offset int64) {
		// Keep the clock within ±10 000 years of the base.
		offset %= 10000 * 366 * 86400
		now := time.Unix(base+offset, 0).UTC()
		orig, ok, reason := k.Verify(addr, now)
		if ok {
			if reason != "" || !IsTagged(addr) || orig != Strip(addr) {
				t.Fatalf("Verify(%q) = %q, ok, %q; IsTagged %v, Strip %q", addr, orig, reason, IsTagged(addr), Strip(addr))
			}
			if u, uok := k.Untag(addr); !uok || u != orig {
				t.Fatalf("Untag(%q) = %q, %v after Verify accepted it", addr, u, uok)
			}
			if !strings.HasSuffix(addr, orig) {
				t.Fatalf("original %q is not a suffix of %q", orig, addr)
			}
		} else if reason == "" {
			t.Fatalf("Verify(%q) refused without a reason", addr)
		}
		tagged := k.Tag(addr, now)
		if tagged == addr {
			return
		}
		if again := k.Tag(tagged, now); again != tagged {
			t.Fatalf("tagged twice: %q -> %q -> %q", addr, tagged, again)
		}
		o, ok, reason := k.Verify(tagged, now)
		if !ok || o != addr {
			t.Fatalf("Verify(Tag(%q) = %q) = %q, %v, %q", addr, tagged, o, ok, reason)
		}
	})
}
