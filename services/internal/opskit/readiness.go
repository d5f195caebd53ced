package opskit

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Check is one dependency probed by /ready. Func returns nil when the
// dependency is usable; it is called with a context bounded by the
// readiness timeout. A critical check failing makes the service not
// ready; an Informational one is reported (JSON, dependency_up) but the
// service keeps serving what it can without it (graceful degradation).
type Check struct {
	Name          string
	Func          func(ctx context.Context) error
	Informational bool
}

// Report is the outcome of one readiness evaluation.
type Report struct {
	Ready      bool
	Draining   bool
	Components map[string]bool
}

// MarshalJSON renders the ADR-0012 shape:
// {"status":"ready"|"not_ready","<dependency>":"healthy"|"unhealthy",...}.
func (r Report) MarshalJSON() ([]byte, error) {
	m := make(map[string]string, len(r.Components)+1)
	for name, ok := range r.Components {
		m[name] = "unhealthy"
		if ok {
			m[name] = "healthy"
		}
	}
	m["status"] = "not_ready"
	if r.Ready {
		m["status"] = "ready"
	}
	return json.Marshal(m)
}

// Readiness runs the dependency checks concurrently, each bounded by a
// timeout well under the probe's 3 s, and turns not-ready for good once
// draining has begun.
type Readiness struct {
	checks   []Check
	timeout  time.Duration
	draining atomic.Bool
	up       *prometheus.GaugeVec
	duration *prometheus.HistogramVec
}

// NewReadiness registers the per-dependency metrics on reg.
func NewReadiness(reg prometheus.Registerer, timeout time.Duration, checks []Check) *Readiness {
	r := &Readiness{
		checks:  checks,
		timeout: timeout,
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dependency_up",
			Help: "1 if the last readiness check of the dependency succeeded, else 0.",
		}, []string{"dependency"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dependency_check_duration_seconds",
			Help:    "Duration of readiness checks per dependency.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5},
		}, []string{"dependency"}),
	}
	reg.MustRegister(r.up, r.duration)
	return r
}

// StartDraining makes every later evaluation report not ready.
func (r *Readiness) StartDraining() { r.draining.Store(true) }

// Evaluate runs all checks concurrently and aggregates them.
func (r *Readiness) Evaluate(ctx context.Context) Report {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	results := make([]bool, len(r.checks))
	var wg sync.WaitGroup
	for i, c := range r.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			results[i] = runCheck(ctx, c)
			r.duration.WithLabelValues(c.Name).Observe(time.Since(start).Seconds())
		}()
	}
	wg.Wait()
	rep := Report{Ready: !r.draining.Load(), Draining: r.draining.Load(), Components: map[string]bool{}}
	for i, c := range r.checks {
		rep.Components[c.Name] = results[i]
		rep.Ready = rep.Ready && (results[i] || c.Informational)
		v := 0.0
		if results[i] {
			v = 1
		}
		r.up.WithLabelValues(c.Name).Set(v)
	}
	return rep
}

// runCheck returns false if the check fails or outlives ctx; a check that
// ignores its context cannot hold /ready past the timeout.
func runCheck(ctx context.Context, c Check) bool {
	done := make(chan error, 1)
	go func() { done <- c.Func(ctx) }()
	select {
	case err := <-done:
		return err == nil
	case <-ctx.Done():
		return false
	}
}

// Names lists the checked dependencies, sorted.
func (r *Readiness) Names() []string {
	names := make([]string, 0, len(r.checks))
	for _, c := range r.checks {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return names
}

// ServeHTTP answers /ready with 200 or 503 and the JSON report.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep := r.Evaluate(req.Context())
	body, _ := json.Marshal(rep)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if rep.Ready {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(append(body, '\n'))
}
