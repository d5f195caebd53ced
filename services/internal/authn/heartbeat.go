package authn

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/prometheus/client_golang/prometheus"
)

// Heartbeat registers with an upstream service and repeats every Interval:
// MC with GC, MH with MC. Fresh records the last success for readiness.
type Heartbeat struct {
	Client   *ServiceClient
	URL      string
	Interval time.Duration
	// Retry is the wait after a failed beat (0: Interval).
	Retry time.Duration
	Body  func() (any, error) // nil error: send; error: skip this beat (counts as failed)
	// Reply, when set, receives each successful answer's JSON body; an
	// error fails the beat.
	Reply   func(body json.RawMessage) error
	Fresh   *opskit.Freshness
	Results *prometheus.CounterVec // label "result": ok | error
	Logger  *slog.Logger
}

// Run beats until ctx ends. A failure is logged once until the next success,
// so an upstream outage does not flood the log.
func (h Heartbeat) Run(ctx context.Context) {
	failing := false
	redial := false // the last beat got no answer
	retry := h.Retry
	if retry <= 0 {
		retry = h.Interval
	}
	opskit.Every(ctx, h.Interval, retry, func(ctx context.Context) error {
		body, err := h.Body()
		if err == nil {
			if redial {
				// Here rather than at the failure: the timed-out request
				// has left the connection by now, so it counts as idle.
				h.Client.CloseIdleConnections()
			}
			bctx, cancel := context.WithTimeout(ctx, h.Interval)
			var reply json.RawMessage
			if h.Reply != nil {
				err = h.Client.PostJSON(bctx, h.URL, body, &reply)
			} else {
				err = h.Client.PostJSON(bctx, h.URL, body, nil)
			}
			cancel()
			// No answer: the retry must not go to the same pooled
			// connection. One cut off by a network loss stays in the pool
			// (HTTP/2 keeps using a connection whose request timed out),
			// and once the network is back TCP resumes it only at its next
			// retransmission, by then many seconds away: every beat until
			// then would time out on it, and the registration lapse,
			// although the upstream is reachable again.
			redial = err != nil && !errors.As(err, new(*StatusError))
			if err == nil && h.Reply != nil {
				err = h.Reply(reply)
			}
		}
		if err != nil {
			h.Results.WithLabelValues("error").Inc()
			if ctx.Err() == nil && !failing {
				h.Logger.Warn("registration failed; retrying", "upstream", h.URL, "retry", retry.String(), "error", err.Error())
			}
			failing = true
			return err
		}
		h.Results.WithLabelValues("ok").Inc()
		if failing || h.Fresh.Last().IsZero() {
			h.Logger.Info("registered", "upstream", h.URL)
		}
		failing = false
		h.Fresh.Mark(time.Now())
		return nil
	})
}
