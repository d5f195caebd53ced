package smoke

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultStartFor is how long a start keeps the rounds running when the
// webhook names no duration: longer than an analysis (Flagger calls the
// pre-rollout hook at the start of each).
const DefaultStartFor = 15 * time.Minute

// Active reports whether the API rounds run now: always, unless OnDemand.
func (l *Load) Active() bool {
	return !l.OnDemand || time.Now().UnixNano() < l.until.Load()
}

// Start keeps the rounds running for d from now; a start never shortens
// an earlier one. It returns when they will stop.
func (l *Load) Start(d time.Duration) time.Time {
	want := time.Now().Add(d).UnixNano()
	for {
		cur := l.until.Load()
		if cur >= want || l.until.CompareAndSwap(cur, want) {
			return time.Unix(0, max(cur, want))
		}
	}
}

// Flowing says why the load is not sending answered calls now (nil when
// it is): not started, or no call answered within the last three rounds'
// time.
func (l *Load) Flowing() error {
	if !l.Active() {
		return fmt.Errorf("the load is not started (POST %s first: Flagger's pre-rollout webhook)", StartPath)
	}
	last := l.lastOK.Load()
	if last == 0 {
		return fmt.Errorf("no call answered yet since the load started")
	}
	if age := time.Since(time.Unix(0, last)); age > 3*l.Interval {
		return fmt.Errorf("no call answered for %s (rounds every %s)", age.Round(time.Millisecond), l.Interval)
	}
	return nil
}

// Paths of the webhooks Flagger calls (Webhooks).
const (
	StartPath = "/v1/load/start"
	GatePath  = "/v1/load/gate"
)

// hookPayload is the part of Flagger's webhook payload the load reads
// (Flagger POSTs name, namespace, phase and the webhook's metadata).
type hookPayload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     string            `json:"phase"`
	Metadata  map[string]string `json:"metadata"`
}

// Webhooks serves Flagger's webhooks, so that Flagger drives the traffic
// its analysis judges:
//   - POST StartPath (a pre-rollout hook): starts the rounds for the
//     metadata's duration (default DefaultStartFor), extending a running
//     start; 200 with when they stop.
//   - POST GatePath (a rollout hook, before each check): 200 while the
//     load's calls are answered, 412 with the reason otherwise, which
//     Flagger counts as a failed check rather than judging no traffic.
func (l *Load) Webhooks(log io.Writer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+StartPath, func(w http.ResponseWriter, r *http.Request) {
		p, err := readHook(r)
		d := DefaultStartFor
		if err == nil && p.Metadata["duration"] != "" {
			if d, err = time.ParseDuration(p.Metadata["duration"]); err == nil && d <= 0 {
				err = fmt.Errorf("metadata.duration %q: want a positive duration like 10m", p.Metadata["duration"])
			}
		}
		if err != nil {
			l.webhooks.WithLabelValues("start", p.canary(), "refused").Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		until := l.Start(d)
		l.webhooks.WithLabelValues("start", p.canary(), "ok").Inc()
		fmt.Fprintf(log, "%s load: started by %s's %s webhook (phase %s) until %s\n", time.Now().UTC().Format(time.RFC3339), p.canary(), "pre-rollout",
			p.Phase, until.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "load on until %s\n", until.UTC().Format(time.RFC3339))
	})
	mux.HandleFunc("POST "+GatePath, func(w http.ResponseWriter, r *http.Request) {
		p, _ := readHook(r)
		if err := l.Flowing(); err != nil {
			l.webhooks.WithLabelValues("gate", p.canary(), "refused").Inc()
			fmt.Fprintf(log, "%s load: gate refused for %s: %v\n", time.Now().UTC().Format(time.RFC3339), p.canary(), err)
			http.Error(w, err.Error(), http.StatusPreconditionFailed)
			return
		}
		l.webhooks.WithLabelValues("gate", p.canary(), "ok").Inc()
		fmt.Fprintln(w, "load flowing")
	})
	return mux
}

func readHook(r *http.Request) (hookPayload, error) {
	var p hookPayload
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&p); err != nil {
		return p, fmt.Errorf("the body is not Flagger's webhook payload: %v", err)
	}
	return p, nil
}

func (p hookPayload) canary() string {
	if p.Name == "" {
		return "unknown"
	}
	return p.Namespace + "/" + p.Name
}
