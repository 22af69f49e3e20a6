package qmgr

import (
	"testing"
	"unsafe"
)

// A deferred message out of memory costs one coldJob per destination; the
// memory target of a 100 000-message backlog depends on it staying small.
func TestColdJobSize(t *testing.T) {
	if n := unsafe.Sizeof(coldJob{}); n > 24 {
		t.Errorf("coldJob is %d bytes, want at most 24", n)
	}
}
