package app

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Connections to one IP beyond the limit wait until one closes; other IPs
// are not held up.
func TestIPLimitsAcrossDomains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			defer c.Close()
		}
	}()
	var l ipLimits
	var d net.Dialer
	dial := l.dial(d.DialContext)
	ctx := withIPLimit(context.Background(), 2, "")
	c1, err := dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn)
	go func() {
		c, err := dial(ctx, "tcp", ln.Addr().String())
		if err == nil {
			got <- c
		}
	}()
	select {
	case <-got:
		t.Fatal("third connection to the same IP was not held back")
	case <-time.After(200 * time.Millisecond):
	}
	// Without a limit in the context nothing waits.
	c4, err := dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c4.Close()
	c1.Close()
	select {
	case c3 := <-got:
		c3.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("waiting connection not released after a close")
	}
	c2.Close()
	short, cancel := context.WithTimeout(withIPLimit(context.Background(), 1, ""), 50*time.Millisecond)
	defer cancel()
	h, _ := dial(withIPLimit(context.Background(), 1, ""), "tcp", ln.Addr().String())
	if _, err := dial(short, "tcp", ln.Addr().String()); err == nil {
		t.Fatal("dial past the limit did not honour the context")
	}
	h.Close()
}
