package opskit

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// sourceLimitListener closes connections beyond max open ones per source
// IP as soon as they are accepted (before any TLS work). Its map holds
// only sources with open connections.
type sourceLimitListener struct {
	net.Listener
	max      int
	rejected prometheus.Counter

	mu   sync.Mutex
	open map[netip.Addr]int
}

func limitPerSource(l net.Listener, max int, rejected prometheus.Counter) net.Listener {
	return &sourceLimitListener{Listener: l, max: max, rejected: rejected, open: map[netip.Addr]int{}}
}

func sourceOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *sourceLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c)
		l.mu.Lock()
		if l.open[src] >= l.max {
			l.mu.Unlock()
			_ = c.Close()
			l.rejected.Inc()
			continue
		}
		l.open[src]++
		l.mu.Unlock()
		return &countedConn{Conn: c, l: l, src: src}, nil
	}
}

func (l *sourceLimitListener) release(src netip.Addr) {
	l.mu.Lock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
	l.mu.Unlock()
}

type countedConn struct {
	net.Conn
	l    *sourceLimitListener
	src  netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
