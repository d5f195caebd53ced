//go:build canaryfault

package mh

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
)

// mediaFault is a fault knob for the canary analysis's own test (the
// media counterpart of opskit's API fault): built with -tags canaryfault,
// MH degrades its media path as its environment says, so that a canary of
// it must be rolled back:
//
//   - DT_FAULT_MEDIA_DROP_RATIO (0..1, default 0): that fraction of the
//     media datagrams MH would forward is silently not forwarded (no copy
//     to any peer), chosen deterministically (each datagram adds the
//     fraction to an accumulator and is dropped when it reaches 1), so any
//     20 consecutive datagrams carry the fraction exactly (to a
//     millionth). MH's own metrics count a dropped datagram as forwarded,
//     as a real forwarding bug would: only the clients see the loss;
//   - DT_FAULT_MEDIA_DELAY (a Go duration, 0..1s, default 0): waited before
//     forwarding each media datagram, measured by
//     mh_forwarding_latency_seconds (which times from receipt). The wait
//     does not hold up the receiving loop: each delayed datagram is
//     forwarded by a timer of its own.
//
// Joins, challenges and everything but forwarding are untouched. A real
// build has neither the knob nor the variables' names (fault_off.go).
type mediaFault struct {
	ppm   int64 // the drop ratio in millionths
	delay time.Duration
	acc   int64 // the drop accumulator (the relay's Serve goroutine only)
}

const (
	faultScale         = 1_000_000
	maxMediaFaultDelay = time.Second
)

func loadMediaFault(l *envconf.Loader) mediaFault {
	ratio := l.Float("DT_FAULT_MEDIA_DROP_RATIO", 0, 0, 1)
	if math.IsNaN(ratio) {
		l.Problemf("DT_FAULT_MEDIA_DROP_RATIO is malformed: expected a number between 0 and 1")
		ratio = 0
	}
	return mediaFault{ppm: int64(math.Round(ratio * faultScale)), delay: l.Duration("DT_FAULT_MEDIA_DELAY", 0, 0, maxMediaFaultDelay)}
}

func (f *mediaFault) active() bool { return f.ppm > 0 || f.delay > 0 }

// announce says at start-up that media is degraded on purpose.
func (f *mediaFault) announce(log *slog.Logger) {
	if f.active() {
		log.Warn("canaryfault build: media forwarding is degraded on purpose",
			"DT_FAULT_MEDIA_DROP_RATIO", fmt.Sprint(float64(f.ppm)/faultScale), "DT_FAULT_MEDIA_DELAY", f.delay.String())
	}
}

// drop says whether the next datagram is not forwarded (Serve goroutine
// only).
func (f *mediaFault) drop() bool {
	if f.ppm == 0 {
		return false
	}
	f.acc += f.ppm
	if f.acc < faultScale {
		return false
	}
	f.acc -= faultScale
	return true
}

// wait is how long each datagram waits before it is forwarded.
func (f *mediaFault) wait() time.Duration { return f.delay }
