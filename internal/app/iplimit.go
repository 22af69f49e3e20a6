package app

import (
	"context"
	"net"
	"sync"
)

// ipLimits enforces limits_scope: mx-ip — at most N simultaneous delivery
// connections to one MX IP address, across the domains that share it. The
// delivery client's dialer waits for a free slot (bounded by the context),
// and the slot is released when the connection closes.
type ipLimits struct {
	mu    sync.Mutex
	inUse map[string]int
	free  map[string]chan struct{} // closed and replaced when a slot frees
}

type ipLimitKey struct{}

// ipLimit is carried in the context of a Connect whose profile limits per MX IP.
type ipLimit struct {
	max     int
	gateway string
}

func withIPLimit(ctx context.Context, max int, gateway string) context.Context {
	return context.WithValue(ctx, ipLimitKey{}, ipLimit{max, gateway})
}

// dial wraps a dial function with the per-IP limit found in ctx.
func (l *ipLimits) dial(base func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		lim, ok := ctx.Value(ipLimitKey{}).(ipLimit)
		if !ok || lim.max <= 0 {
			return base(ctx, network, addr)
		}
		host, _, _ := net.SplitHostPort(addr)
		key := host + "|" + lim.gateway
		if err := l.acquire(ctx, key, lim.max); err != nil {
			return nil, err
		}
		c, err := base(ctx, network, addr)
		if err != nil {
			l.release(key)
			return nil, err
		}
		return &limitedConn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *ipLimits) acquire(ctx context.Context, key string, max int) error {
	for {
		l.mu.Lock()
		if l.inUse == nil {
			l.inUse, l.free = map[string]int{}, map[string]chan struct{}{}
		}
		if l.inUse[key] < max {
			l.inUse[key]++
			l.mu.Unlock()
			return nil
		}
		ch := l.free[key]
		if ch == nil {
			ch = make(chan struct{})
			l.free[key] = ch
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *ipLimits) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inUse[key]--
	if l.inUse[key] <= 0 {
		delete(l.inUse, key)
	}
	if ch := l.free[key]; ch != nil {
		close(ch)
		delete(l.free, key)
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
