//go:build !chaosfragile

package mc

import (
	"context"
	"net"
)

// fragileRedis is off in every real build (see fragile_on.go).
const fragileRedis = false

// fragileDialer: nil, go-redis's own dialer.
func fragileDialer() func(ctx context.Context, network, addr string) (net.Conn, error) { return nil }
