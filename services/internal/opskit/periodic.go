package opskit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Freshness remembers when something last succeeded (a registration, a
// JWKS fetch) so readiness can require it to be recent.
type Freshness struct{ last atomic.Int64 }

// Mark records a success at t.
func (f *Freshness) Mark(t time.Time) { f.last.Store(t.UnixNano()) }

// Last returns the time of the last success (zero if none).
func (f *Freshness) Last() time.Time {
	n := f.last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Within returns nil when the last success is no older than maxAge.
func (f *Freshness) Within(maxAge time.Duration, now time.Time) error {
	last := f.Last()
	if last.IsZero() {
		return fmt.Errorf("never succeeded")
	}
	if age := now.Sub(last); age > maxAge {
		return fmt.Errorf("last success %s ago exceeds %s", age.Round(time.Millisecond), maxAge)
	}
	return nil
}

// Every calls fn at once and then every interval until ctx ends. After a
// failure it retries sooner (retry, capped at interval) so a dependency that
// comes back is noticed quickly.
func Every(ctx context.Context, interval, retry time.Duration, fn func(context.Context) error) {
	for {
		wait := interval
		if err := fn(ctx); err != nil {
			wait = min(retry, interval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
