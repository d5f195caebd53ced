//go:build canaryfault

package opskit

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
)

// apiFault is a fault knob for the canary analysis's own test: built with
// -tags canaryfault, a service degrades its API listener as its
// environment says, so that a canary of it must be rolled back:
//
//   - DT_FAULT_5XX_RATIO (0..1, default 0): that fraction of API requests
//     is answered 503, chosen deterministically (each request adds the
//     fraction to an accumulator and fails when it reaches 1), so any 20
//     consecutive requests carry the fraction exactly (to a millionth);
//   - DT_FAULT_DELAY (a Go duration, 0..5s, default 0): added to every API
//     request before its handler runs. 5 s stays under the API's default
//     read and write timeouts (10 s, 15 s): a delayed request is slow, not
//     cut off.
//
// The fault sits inside the RED instrumentation, so its 503s and delays
// are counted in http_requests_total and http_request_duration_seconds as
// real ones are. The ops listener (probes, scrapes) is never touched. A
// real build has neither the knob nor the variables' names (fault_off.go);
// the pipeline refuses to push or release a build made with --go-tags.
//
// DT_FAULT_ROUTES (comma-separated route patterns as the service's mux
// names them, e.g. "GET /v1/meeting-controllers"; default every route)
// limits the fault to those routes: the canary proof degrades the calls
// its load makes and leaves the services' calls to each other (a
// meeting-controller's registration, a media-handler's) healthy, as a
// regression in one endpoint would.
//
// DT_FAULT_MIN_LATENCY (a Go duration, 0..5s, default 0): every faulted
// request is answered no sooner than this after it arrived (its headers
// wait). Where the service's own latency is under it, which is nearly
// always for a floor well above it, the p99 is the floor itself: a p99
// regression of an exact size, whatever the shared machine's noise.
type apiFault struct {
	ppm        int64 // the 5xx ratio in millionths
	delay      time.Duration
	minLatency time.Duration
	routes     map[string]bool // nil: every route
}

const (
	faultScale    = 1_000_000
	maxFaultDelay = 5 * time.Second
)

func loadAPIFault(l *envconf.Loader) apiFault {
	ratio := l.Float("DT_FAULT_5XX_RATIO", 0, 0, 1)
	if math.IsNaN(ratio) {
		l.Problemf("DT_FAULT_5XX_RATIO is malformed: expected a number between 0 and 1")
		ratio = 0
	}
	f := apiFault{ppm: int64(math.Round(ratio * faultScale)), delay: l.Duration("DT_FAULT_DELAY", 0, 0, maxFaultDelay),
		minLatency: l.Duration("DT_FAULT_MIN_LATENCY", 0, 0, maxFaultDelay)}
	for _, r := range strings.Split(l.String("DT_FAULT_ROUTES", ""), ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if f.routes == nil {
			f.routes = map[string]bool{}
		}
		f.routes[r] = true
	}
	return f
}

func (f apiFault) active() bool { return f.ppm > 0 || f.delay > 0 || f.minLatency > 0 }

// announce says at start-up that the API is degraded on purpose.
func (f apiFault) announce(log *slog.Logger) {
	if f.active() {
		log.Warn("canaryfault build: API requests are degraded on purpose",
			"DT_FAULT_5XX_RATIO", fmt.Sprint(float64(f.ppm)/faultScale), "DT_FAULT_DELAY", f.delay.String(),
			"DT_FAULT_MIN_LATENCY", f.minLatency.String(), "DT_FAULT_ROUTES", f.routeList())
	}
}

func (f apiFault) routeList() string {
	if f.routes == nil {
		return "every route"
	}
	var rs []string
	for r := range f.routes {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	return strings.Join(rs, ", ")
}

// wrap puts the fault in front of the API's mux.
func (f apiFault) wrap(mux *http.ServeMux) http.Handler {
	if !f.active() {
		return mux
	}
	var (
		mu  sync.Mutex
		acc int64
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.routes != nil {
			if _, pattern := mux.Handler(r); !f.routes[pattern] {
				mux.ServeHTTP(w, r)
				return
			}
		}
		if f.minLatency > 0 {
			pw := &paddedWriter{ResponseWriter: w, until: time.Now().Add(f.minLatency), done: r.Context().Done()}
			defer pw.wait() // a handler that writes nothing is padded too
			w = pw
		}
		if f.delay > 0 {
			t := time.NewTimer(f.delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		mu.Lock()
		acc += f.ppm
		fail := acc >= faultScale
		if fail {
			acc -= faultScale
		}
		mu.Unlock()
		if !fail {
			mux.ServeHTTP(w, r)
			return
		}
		// Counted under the route the request would have taken.
		_, r.Pattern = mux.Handler(r)
		http.Error(w, "canaryfault build: injected failure", http.StatusServiceUnavailable)
	})
}

// paddedWriter holds a response's headers until a time.
type paddedWriter struct {
	http.ResponseWriter
	until  time.Time
	done   <-chan struct{}
	waited bool
}

func (p *paddedWriter) wait() {
	if p.waited {
		return
	}
	p.waited = true
	t := time.NewTimer(time.Until(p.until))
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.done:
	}
}

func (p *paddedWriter) WriteHeader(code int) {
	p.wait()
	p.ResponseWriter.WriteHeader(code)
}

func (p *paddedWriter) Write(b []byte) (int, error) {
	p.wait()
	return p.ResponseWriter.Write(b)
}

func (p *paddedWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
