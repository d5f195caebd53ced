package smoke

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// DefaultStartFor is how long a start keeps the rounds running when the
// webhook names no duration: longer than an analysis (Flagger calls the
// pre-rollout hook at the start of each). MaxStartFor bounds a start.
const (
	DefaultStartFor = 15 * time.Minute
	MaxStartFor     = time.Hour
)

// apiTargets are the services the load calls, each a canary's target:
// the rounds call global-controller and meeting-controller, the token
// renewals and key-set fetches (KeySetRate) ac-service.
var apiTargets = [...]string{"global-controller", "meeting-controller", "ac-service"}

// mediaTarget is the canary target judged on the media sessions.
const mediaTarget = "media-handler"

// Active reports whether the API rounds and the media sessions run now:
// always, unless OnDemand.
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

// Flowing says why the load is not sending answered calls to target now
// (nil when it is): not started, or no call to it answered within the
// last three rounds' time. media-handler is judged on the media sessions
// (a datagram relayed within the last three Intervals). Another target
// the rounds do not call is judged on any of them.
func (l *Load) Flowing(target string) error {
	if !l.Active() {
		return fmt.Errorf("the load is not started (POST %s first: Flagger's pre-rollout webhook)", StartPath)
	}
	if target == mediaTarget {
		if !l.Media {
			return errors.New("the load keeps no media sessions (SMOKE_LOAD_MEDIA=false): nothing to judge media-handler on")
		}
		last := l.relayed.Load()
		if last == 0 {
			return errors.New("no media datagram relayed by media-handler yet")
		}
		if age := time.Since(time.Unix(0, last)); age > 3*l.mediaInterval() {
			return fmt.Errorf("no media datagram relayed by media-handler for %s (one each way every %s per session)", age.Round(time.Millisecond), l.mediaInterval())
		}
		return nil
	}
	var last int64
	if i := slices.Index(apiTargets[:], target); i >= 0 {
		last = l.lastOK[i].Load()
	} else {
		target = strings.Join(apiTargets[:], " or ")
		for i := range l.lastOK {
			last = max(last, l.lastOK[i].Load())
		}
	}
	if last == 0 {
		return fmt.Errorf("no call to %s answered yet", target)
	}
	if age := time.Since(time.Unix(0, last)); age > 3*l.Interval {
		return fmt.Errorf("no call to %s answered for %s (rounds every %s)", target, age.Round(time.Millisecond), l.Interval)
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
//     metadata's duration (default DefaultStartFor, at most MaxStartFor),
//     extending a running start; 200 with when they stop.
//   - POST GatePath (a rollout hook, before each check): 200 while the
//     load's calls to the canary's service (the payload's name) are
//     answered (for media-handler: its media sessions' datagrams are
//     relayed), 412 with the reason otherwise, which Flagger counts as a
//     failed check rather than judging no traffic.
func (l *Load) Webhooks(log io.Writer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+StartPath, func(w http.ResponseWriter, r *http.Request) {
		p, err := readHook(r)
		d := DefaultStartFor
		if err == nil && p.Metadata["duration"] != "" {
			if d, err = time.ParseDuration(p.Metadata["duration"]); err == nil && (d <= 0 || d > MaxStartFor) {
				err = fmt.Errorf("metadata.duration %q: want a positive duration up to %s, like 10m", p.Metadata["duration"], MaxStartFor)
			}
		}
		if err != nil {
			l.webhooks.WithLabelValues("start", "refused").Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		until := l.Start(d)
		l.webhooks.WithLabelValues("start", "ok").Inc()
		fmt.Fprintf(log, "%s load: started by %s's %s webhook (phase %s) until %s\n", time.Now().UTC().Format(time.RFC3339), p.canary(), "pre-rollout",
			p.Phase, until.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "load on until %s\n", until.UTC().Format(time.RFC3339))
	})
	mux.HandleFunc("POST "+GatePath, func(w http.ResponseWriter, r *http.Request) {
		p, _ := readHook(r)
		if err := l.Flowing(p.Name); err != nil {
			l.webhooks.WithLabelValues("gate", "refused").Inc()
			fmt.Fprintf(log, "%s load: gate refused for %s: %v\n", time.Now().UTC().Format(time.RFC3339), p.canary(), err)
			http.Error(w, err.Error(), http.StatusPreconditionFailed)
			return
		}
		l.webhooks.WithLabelValues("gate", "ok").Inc()
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
