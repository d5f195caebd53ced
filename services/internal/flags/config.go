package flags

import (
	"context"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/opskit"
)

// Config is the flag client's part of a service's environment: the same
// variables in every service (docs/operations/feature-flags.md).
type Config struct {
	URL       string // FLAGS_URL: the gateway's watch URL (wss://); empty: no live tier
	CacheFile string // FLAGS_CACHE_FILE: the last values across restarts; empty: no cache
	Audience  string // FLAGS_AUDIENCE: the aud requested from AC for the gateway
}

// DefaultAudience is the audience the flag gateway's tokens carry.
const DefaultAudience = "flag-gateway"

// LoadConfig reads FLAGS_URL, FLAGS_CACHE_FILE and FLAGS_AUDIENCE.
func LoadConfig(l *envconf.Loader) Config {
	return Config{
		URL:       l.OptionalURL("FLAGS_URL", "wss", "the flag gateway's watch URL, e.g. wss://flag-gateway/v1/flags/watch"),
		CacheFile: l.String("FLAGS_CACHE_FILE", ""),
		Audience:  l.String("FLAGS_AUDIENCE", DefaultAudience),
	}
}

// ForService is the client a service runs: it trusts the kit's CA, logs
// and exports through the kit, and subscribes with token (nil: none).
// Without FLAGS_URL it serves the cached values (FLAGS_CACHE_FILE) or the
// compiled defaults; Run logs that once.
func ForService(cfg Config, kit *opskit.Kit, token func(context.Context) (string, error)) *Client {
	return New(Options{
		URL:        cfg.URL,
		HTTPClient: HTTPClient(kit.ClientTLS),
		CacheFile:  cfg.CacheFile,
		Logger:     kit.Logger,
		Registry:   kit.Registry,
		Token:      token,
	})
}

// Start runs c until ctx ends; the returned function waits, once ctx has
// ended, for it to have closed its connection (a service's graceful
// shutdown). Called before ctx ends (the service failed), it returns at
// once: the runtime cancels ctx next.
func Start(ctx context.Context, c *Client) (wait func()) {
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	return func() {
		if ctx.Err() == nil {
			return
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second): // bounded: never holds a shutdown up
		}
	}
}
