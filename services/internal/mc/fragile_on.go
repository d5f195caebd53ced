//go:build chaosfragile

package mc

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// fragileRedis is a fault knob for the chaos stage's own test: built with
// -tags chaosfragile, meeting-controller never reconnects to Redis once a
// connection has broken, which the Redis pod-delete experiment must catch.
// The pipeline refuses to push or release a build made with --go-tags.
const fragileRedis = true

// fragileDialer dials as usual until one of its connections fails; from
// then on every dial is refused.
func fragileDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	var broken atomic.Bool
	d := &net.Dialer{Timeout: time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if broken.Load() {
			return nil, errors.New("chaosfragile build: never reconnects to Redis")
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &breakingConn{Conn: c, broken: &broken}, nil
	}
}

type breakingConn struct {
	net.Conn
	broken *atomic.Bool
}

func (c *breakingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		c.broken.Store(true)
	}
	return n, err
}

func (c *breakingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		c.broken.Store(true)
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
