package certname

import "testing"

func TestName(t *testing.T) {
	for _, tc := range []struct {
		presented, ref string
		want           bool
	}{
		{"mx.example.com", "MX.Example.COM.", true},
		{"*.example.com", "mx.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.mx.example.com", false},
		{"m*.example.com", "mx.example.com", false},
		{"*.com", "example.com", false},
		{"mx.example.com", "*.example.com", false},
		{"", "example.com", false},
	} {
		if got := Name(tc.presented, tc.ref); got != tc.want {
			t.Errorf("Name(%q, %q) = %v, want %v", tc.presented, tc.ref, got, tc.want)
		}
	}
}
