package opskit

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics records RED metrics. Labels are bounded by construction: the
// route is the ServeMux pattern (never the raw path, which may carry IDs),
// the method is folded to a fixed set, and the code is the status code.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests served, by listener, route pattern, method and status code.",
		}, []string{"listener", "route", "method", "code"}),
		// Both a classic histogram (DefBuckets, for the alerts, runbooks
		// and any reader of _bucket) and a native one: the canary analysis
		// compares the canary's p99 with the primary's against a 2× bound
		// (infra/ci/deploy-canary.yaml), which DefBuckets cannot resolve
		// (9 ms and 17 ms both read as their bucket's top, a ratio of 2.5).
		// A bucket factor of 1.05 gives schema 4, 2^(1/16) ≈ 1.044: each
		// bucket is at most 4.4% wider than the one below, so a quantile
		// estimate is within 4.4% of the truth (docs/operations/canary.md).
		// 160 buckets span 2^10 (e.g. 1 ms to 1 s) per series; a wider
		// spread halves the resolution until the hourly reset, which
		// bounds the memory a series can take.
		// Prometheus gets the native form only when it scrapes protobuf
		// with native histograms enabled; the text format stays classic.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "http_request_duration_seconds",
			Help:                            "HTTP request latency, by listener, route pattern and method.",
			Buckets:                         prometheus.DefBuckets,
			NativeHistogramBucketFactor:     1.05,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"listener", "route", "method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "http_requests_in_flight",
			Help: "HTTP requests being served, by listener.",
		}, []string{"listener"}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

func methodLabel(m string) string {
	if knownMethods[m] {
		return m
	}
	return "OTHER"
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument wraps a ServeMux, or a handler in front of one (the API's
// canaryfault knob, whose 503s and delays are counted like real ones);
// after it serves, r.Pattern holds the matched route ("" when nothing
// matched).
//
// The routes' series (code 200, and the latency histogram) exist from the
// first scrape, at zero: a rate or increase over a series needs two
// samples, so a series born at its first request is invisible to a query
// for a scrape interval or two. A canary then looks idle (no values, or
// too few requests) at the check right after it is first given traffic.
func (m *httpMetrics) instrument(listener string, mux http.Handler, routes ...string) http.Handler {
	inFlight := m.inFlight.WithLabelValues(listener)
	for _, route := range routes {
		method, _, ok := strings.Cut(route, " ")
		if !ok || !knownMethods[method] {
			continue // a pattern for every method: which one is a guess
		}
		m.requests.WithLabelValues(listener, route, method, "200")
		m.duration.WithLabelValues(listener, route, method)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		inFlight.Inc()
		defer inFlight.Dec()
		rec := &statusRecorder{ResponseWriter: w}
		mux.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		method := methodLabel(r.Method)
		m.requests.WithLabelValues(listener, route, method, strconv.Itoa(code)).Inc()
		m.duration.WithLabelValues(listener, route, method).Observe(time.Since(start).Seconds())
	})
}

// Mux is the API's ServeMux, remembering its patterns so that the
// listener's series exist before the first request (instrument).
type Mux struct {
	*http.ServeMux
	patterns []string
}

// NewMux is an empty Mux.
func NewMux() *Mux { return &Mux{ServeMux: http.NewServeMux()} }

// Handle registers handler for pattern, as http.ServeMux does.
func (m *Mux) Handle(pattern string, handler http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, handler)
}

// HandleFunc registers handler for pattern, as http.ServeMux does.
func (m *Mux) HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(handler))
}
