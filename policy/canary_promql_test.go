package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	flaggerv1beta1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/metrics/observers"
	"github.com/fluxcd/flagger/pkg/metrics/providers"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// promQueryAPI answers Prometheus's instant-query endpoint the way
// Prometheus does: Prometheus's own engine evaluates the query over st at
// the instant at, and the vector goes out in the HTTP API's JSON (the
// engine's own Sample encoding). Flagger's Prometheus provider talks to it
// as to a real server.
func promQueryAPI(t *testing.T, st storage.Queryable, at time.Time) *httptest.Server {
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: 10 * time.Second})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		fail := func(code int, err error) {
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "error": err.Error()})
		}
		q, err := eng.NewInstantQuery(r.Context(), st, nil, r.FormValue("query"), at)
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		defer q.Close()
		res := q.Exec(r.Context())
		if res.Err != nil {
			fail(http.StatusUnprocessableEntity, res.Err)
			return
		}
		vec, err := res.Vector()
		if err != nil {
			// A template must yield a vector: Flagger reads no other type.
			fail(http.StatusBadRequest, err)
			return
		}
		if vec == nil {
			vec = promql.Vector{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": vec}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runTemplate does what Flagger's runMetricChecks does for one metric of a
// canary (pkg/controller/scheduler_metrics.go): the template model as its
// toMetricModel builds it, Flagger's RenderQuery, a provider from Flagger's
// factory (pointed at addr instead of the template's address), RunQuery.
func runTemplate(c *flaggerv1beta1.Canary, m flaggerv1beta1.CanaryMetric, tmpl *flaggerv1beta1.MetricTemplate, addr string) (string, float64, error) {
	model := flaggerv1beta1.MetricTemplateModel{
		Name: c.Name, Namespace: c.Namespace, Target: c.Spec.TargetRef.Name,
		Service: c.Spec.TargetRef.Name, Ingress: c.Spec.TargetRef.Name, Route: c.Spec.TargetRef.Name,
		Interval: m.Interval, Variables: m.TemplateVariables,
	}
	if c.Spec.Service.Name != "" {
		model.Service = c.Spec.Service.Name
	}
	query, err := observers.RenderQuery(tmpl.Spec.Query, model)
	if err != nil {
		return "", 0, err
	}
	spec := tmpl.Spec.Provider
	spec.Address = addr
	p, err := providers.Factory{}.Provider(m.Interval, spec, nil)
	if err != nil {
		return query, 0, err
	}
	v, err := p.RunQuery(query)
	return query, v, err
}

// flaggerPasses is runMetricChecks' judgement of a result (unexported in
// Flagger, so restated): a query error, no series or NaN fails the check;
// a value below thresholdRange.min or above thresholdRange.max fails it.
// Both comparisons are strict, so a value exactly at a bound passes.
func flaggerPasses(m flaggerv1beta1.CanaryMetric, v float64, err error) bool {
	if err != nil {
		return false
	}
	tr := m.ThresholdRange
	return !(tr.Min != nil && v < *tr.Min) && !(tr.Max != nil && v > *tr.Max)
}

// podNames makes n pod names of a Deployment the way Kubernetes does:
// <deployment>-<pod-template-hash>-<5 random>, both from apimachinery's
// alphabet (the ReplicaSet's hash is fnv32a of its template).
func podNames(d *appsv1.Deployment, n int) []string {
	h := fnv.New32a()
	raw, _ := json.Marshal(d.Spec.Template)
	h.Write(raw)
	hash := rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
	var out []string
	for range n {
		out = append(out, d.Name+"-"+hash+"-"+rand.String(5))
	}
	return out
}

// traffic is what one side (canary or primary) serves, per second, split
// evenly over its pods. Latency is observations per second keyed by the
// latency observed (seconds); nil means the histogram series do not exist.
type traffic struct {
	ok, errors float64
	latency    map[float64]float64
	absent     bool // never scraped: no series at all
}

// nativeBucket is the native-histogram bucket, schema and index, into which
// the services' http_request_duration_seconds (services/internal/opskit:
// NativeHistogramBucketFactor 1.05) puts an observation of v seconds, as
// client_golang itself computes it. Index i is (2^((i-1)/2^schema),
// 2^(i/2^schema)].
func nativeBucket(t *testing.T, v float64) (schema, index int32) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "h", NativeHistogramBucketFactor: 1.05})
	reg.MustRegister(h)
	h.Observe(v)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gathering one observation: %v", err)
	}
	hist := mfs[0].GetMetric()[0].GetHistogram()
	if len(hist.GetPositiveSpan()) != 1 {
		t.Fatalf("%g: spans %v", v, hist.GetPositiveSpan())
	}
	return hist.GetSchema(), hist.GetPositiveSpan()[0].GetOffset()
}

// nativeHistogram is the promqltest notation of a native histogram of the
// given observations (value → count), in opskit's buckets.
func nativeHistogram(t *testing.T, obs map[float64]float64) string {
	t.Helper()
	var schema int32 = 4
	counts := map[int32]float64{}
	lo, hi := int32(math.MaxInt32), int32(math.MinInt32)
	sum, count := 0.0, 0.0
	for v, n := range obs {
		s, i := nativeBucket(t, v)
		if s != schema {
			t.Fatalf("opskit's bucket factor gives schema %d, want %d", s, schema)
		}
		counts[i] += n
		lo, hi = min(lo, i), max(hi, i)
		sum += v * n
		count += n
	}
	if len(counts) == 0 {
		return fmt.Sprintf("{{schema:%d sum:0 count:0}}", schema)
	}
	var buckets []string
	for i := lo; i <= hi; i++ {
		buckets = append(buckets, strconv.FormatFloat(counts[i], 'g', -1, 64))
	}
	return fmt.Sprintf("{{schema:%d sum:%s count:%s buckets:[%s] offset:%d}}", schema,
		strconv.FormatFloat(sum, 'g', -1, 64), strconv.FormatFloat(count, 'g', -1, 64), strings.Join(buckets, " "), lo)
}

// series writes the promqltest load lines of one side's pods, as the
// services' opskit exports them and Prometheus stores them (native
// histograms enabled): http_requests_total{listener,route,method,code},
// whose code="503" child exists only once a 503 was served, and
// http_request_duration_seconds as a native histogram of schema 4 (the
// classic _bucket series Prometheus also keeps are not read by the
// templates, so not written). Every pod also serves ops-listener requests
// (probes, scrapes), half of them 503, which the templates must ignore.
func (tr traffic) series(t *testing.T, b *strings.Builder, ns string, pods []string, scrape time.Duration, steps int) {
	if tr.absent {
		return
	}
	perStep := func(perSec float64) float64 {
		return perSec / float64(len(pods)) * scrape.Seconds()
	}
	line := func(name, labels string, perSec float64) {
		fmt.Fprintf(b, "  %s{%s} 0+%sx%d\n", name, labels, strconv.FormatFloat(perStep(perSec), 'g', -1, 64), steps)
	}
	for _, pod := range pods {
		base := fmt.Sprintf(`namespace=%q, pod=%q, route="POST /v1/things", method="POST"`, ns, pod)
		line("http_requests_total", base+`, listener="api", code="200"`, tr.ok)
		if tr.errors > 0 {
			line("http_requests_total", base+`, listener="api", code="503"`, tr.errors)
		}
		line("http_requests_total", base+`, listener="ops", code="503"`, 50)
		if tr.latency != nil {
			step := map[float64]float64{}
			for v, n := range tr.latency {
				step[v] = perStep(n)
			}
			fmt.Fprintf(b, "  http_request_duration_seconds{%s, listener=\"api\"} %s+%sx%d\n", base,
				nativeHistogram(t, nil), nativeHistogram(t, step), steps)
		}
	}
}

// flaggerPrimaryName is the Deployment Flagger runs the primary as:
// "<target>-primary" (createPrimaryDeployment, pkg/canary/
// deployment_controller.go, v1.36.1). Restated, not called: pkg/canary
// imports k8s.io/api/autoscaling/v2beta2, which this module's k8s.io/api
// (v0.37) no longer has, so it does not build here.
func flaggerPrimaryName(c *flaggerv1beta1.Canary) string {
	return c.Spec.TargetRef.Name + "-primary"
}

// side is what one side (canary or primary) of a case writes into the
// promqltest load block: traffic for the HTTP services, media for
// media-handler.
type side interface {
	series(t *testing.T, b *strings.Builder, ns string, pods []string, scrape time.Duration, steps int)
}

// mhForwardingBuckets reads the classic buckets of media-handler's
// mh_forwarding_latency_seconds from its source (services/internal/mh),
// so that the series below are cut where media-handler cuts them.
func mhForwardingBuckets(t *testing.T) []float64 {
	t.Helper()
	src, err := os.ReadFile("../services/internal/mh/relay.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Name:\s+"mh_forwarding_latency_seconds",(?s:[^}]*?)Buckets:\s+\[\]float64\{([^}]*)\}`).FindSubmatch(src)
	if m == nil {
		t.Fatal("services/internal/mh/relay.go: no mh_forwarding_latency_seconds with literal Buckets")
	}
	var out []float64
	for _, f := range strings.Split(string(m[1]), ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			t.Fatalf("mh_forwarding_latency_seconds bucket %q: %v", f, err)
		}
		out = append(out, v)
	}
	return out
}

// canaryLoadPod is the pod of the canary load (darktower-smoke, component
// canary-load) whose scrape carries darktower_load_datagrams_total: its
// own pod label, which the templates must not read as a media-handler.
const canaryLoadPod = "darktower-smoke-canary-load-5d8f7c9b4-q2x7z"

// media is one media-handler side as the canary load's clients and
// media-handler's own pods count it, per second, split evenly over its
// pods: datagrams the clients had relayed and lost through it
// (darktower_load_datagrams_total{media_handler,outcome}, both outcomes
// created at 0 when the load joins a media-handler), and its forwarding
// latencies (seconds → observations per second; nil means the histogram
// series do not exist).
type media struct {
	relayed, lost float64
	latency       map[float64]float64
	absent        bool // the load never joined it and it was never scraped: no series at all
	buckets       []float64
}

// series writes the promqltest load lines of one media-handler side: the
// load's darktower_load_datagrams_total by media_handler (the load's scrape
// adds its own pod label), and media-handler's classic histogram
// mh_forwarding_latency_seconds_bucket{le} (its _sum and _count are not
// read by the templates, so not written). The load's ServiceMonitor scrapes
// at the media-handler's interval (checked by the test), so one block
// holds both.
func (m media) series(t *testing.T, b *strings.Builder, ns string, pods []string, scrape time.Duration, steps int) {
	if m.absent {
		return
	}
	perStep := func(perSec float64) string {
		return strconv.FormatFloat(perSec/float64(len(pods))*scrape.Seconds(), 'g', -1, 64)
	}
	for _, pod := range pods {
		for _, o := range []struct {
			outcome string
			perSec  float64
		}{{"relayed", m.relayed}, {"lost", m.lost}} {
			fmt.Fprintf(b, "  darktower_load_datagrams_total{namespace=%q, pod=%q, media_handler=%q, outcome=%q} 0+%sx%d\n",
				ns, canaryLoadPod, pod, o.outcome, perStep(o.perSec), steps)
		}
		if m.latency == nil {
			continue
		}
		if len(m.buckets) == 0 {
			t.Fatal("media side without media-handler's buckets")
		}
		for _, le := range append(slices.Clone(m.buckets), math.Inf(1)) {
			cum := 0.0
			for v, n := range m.latency {
				if v <= le {
					cum += n
				}
			}
			leLabel := "+Inf"
			if !math.IsInf(le, 1) {
				leLabel = strconv.FormatFloat(le, 'g', -1, 64)
			}
			fmt.Fprintf(b, "  mh_forwarding_latency_seconds_bucket{namespace=%q, pod=%q, le=%q} 0+%sx%d\n", ns, pod, leLabel, perStep(cum), steps)
		}
	}
}

// canaryCase is one synthetic state of the canary and its primary.
type canaryCase struct {
	name            string
	canary, primary side
	want            map[string]bool    // template → Flagger passes the check
	exact           map[string]float64 // template → the value the case must hit (a bound)
	near            map[string]float64 // template → a value the case must come within 5% of
}

func TestCanaryTemplatesPromQLBoundaries(t *testing.T) {
	ci := decoded(t, "ci")
	prod := decoded(t, "overlays/prod")
	templates := map[string]*flaggerv1beta1.MetricTemplate{}
	for _, m := range All[*flaggerv1beta1.MetricTemplate](ci) {
		templates[m.Name] = m
	}
	monitors := map[string]*monitoringv1.ServiceMonitor{}
	for _, m := range All[*monitoringv1.ServiceMonitor](prod) {
		monitors[m.Name] = m
	}
	deployments := map[string]*appsv1.Deployment{}
	for _, d := range All[*appsv1.Deployment](prod) {
		deployments[d.Name] = d
	}
	canaries := All[*flaggerv1beta1.Canary](ci)
	if len(canaries) == 0 {
		t.Fatal("no canaries rendered from infra/ci")
	}

	// Rates per second. The primary's 5xx fraction is 1/64 so that 1.5× is
	// a float the engine can hit exactly. Its latency is 90% at 30 ms and
	// 10% at 64 ms; a canary at k× is the same shape at k× the latencies.
	// At 2× every observation lands exactly 16 native buckets (one power of
	// two) higher, so both quantiles interpolate the same fraction of their
	// bucket; the p99's bucket, (62.5, 65.3] ms, starts at a power of two
	// (2^-4 s), whose log2 is exact, so the log-scale interpolation divides
	// to exactly 2 (in a bucket with no such bound it rounds to
	// 1.9999999999999996). Both sides run two pods, so their sums round
	// alike and the cases at a bound land exactly on it.
	primary := traffic{ok: 63, errors: 1, latency: map[float64]float64{0.030: 90, 0.064: 10}} // 5xx 1/64
	withErrors := func(e float64) traffic { return traffic{ok: 64 - e, errors: e, latency: primary.latency} }
	withLatency := func(l map[float64]float64) traffic { return traffic{ok: 64, latency: l} }
	times := func(k float64) traffic {
		l := map[float64]float64{}
		for v, n := range primary.latency {
			l[v*k] = n
		}
		return withLatency(l)
	}
	constant := func(v float64) traffic { return withLatency(map[float64]float64{v: 64}) }
	cases := []canaryCase{
		{name: "error ratio 1.4", canary: withErrors(1.4), primary: primary,
			want: map[string]bool{"request-volume": true, "error-rate-vs-baseline": true, "p99-latency-vs-baseline": true}},
		{name: "error ratio 1.5 (at the bound)", canary: withErrors(1.5), primary: primary,
			want:  map[string]bool{"error-rate-vs-baseline": true},
			exact: map[string]float64{"error-rate-vs-baseline": 1.5}},
		{name: "error ratio 2.0", canary: withErrors(2), primary: primary,
			want: map[string]bool{"error-rate-vs-baseline": false}},
		{name: "p99 ratio 1.9", canary: times(1.9), primary: primary,
			want: map[string]bool{"p99-latency-vs-baseline": true},
			near: map[string]float64{"p99-latency-vs-baseline": 1.9}},
		{name: "p99 ratio 2.0 (at the bound)", canary: times(2), primary: primary,
			want:  map[string]bool{"p99-latency-vs-baseline": true},
			exact: map[string]float64{"p99-latency-vs-baseline": 2}},
		{name: "p99 ratio 2.5", canary: times(2.5), primary: primary,
			want: map[string]bool{"p99-latency-vs-baseline": false},
			near: map[string]float64{"p99-latency-vs-baseline": 2.5}},
		// What the classic DefBuckets read as 2.5 (both at their bucket's
		// top, 0.01 and 0.025), the native buckets read as 1.9.
		{name: "constant 17.1 ms vs 9 ms (1.9×)", canary: constant(0.0171), primary: constant(0.009),
			want: map[string]bool{"p99-latency-vs-baseline": true},
			near: map[string]float64{"p99-latency-vs-baseline": 1.9}},
		{name: "zero errors on both (no 5xx series)", canary: traffic{ok: 64, latency: primary.latency}, primary: traffic{ok: 64, latency: primary.latency},
			want:  map[string]bool{"request-volume": true, "error-rate-vs-baseline": true, "p99-latency-vs-baseline": true},
			exact: map[string]float64{"error-rate-vs-baseline": 0}},
		{name: "clean primary, canary 0.05% 5xx (under the 0.1% floor)", canary: withErrors(0.032), primary: traffic{ok: 64, latency: primary.latency},
			want: map[string]bool{"error-rate-vs-baseline": true}},
		{name: "clean primary, canary 1% 5xx", canary: withErrors(0.64), primary: traffic{ok: 64, latency: primary.latency},
			want: map[string]bool{"error-rate-vs-baseline": false}},
		{name: "both faster than 5 ms (p99 floor)", canary: constant(0.004), primary: constant(0.0015), // 2.7× unfloored
			want: map[string]bool{"p99-latency-vs-baseline": true}},
		{name: "canary at 1 req/s (20 in the window, at the bound)", canary: traffic{ok: 1, latency: map[float64]float64{0.02: 1}}, primary: primary,
			want:  map[string]bool{"request-volume": true},
			exact: map[string]float64{"request-volume": 20}},
		{name: "canary at 0.5 req/s (10 in the window)", canary: traffic{ok: 0.5, latency: map[float64]float64{0.02: 0.5}}, primary: primary,
			want: map[string]bool{"request-volume": false}},
		{name: "no traffic to the canary (idle: flat series)", canary: traffic{latency: map[float64]float64{}}, primary: primary,
			want: map[string]bool{"request-volume": false, "error-rate-vs-baseline": false, "p99-latency-vs-baseline": false}},
		{name: "canary never scraped (missing series)", canary: traffic{absent: true}, primary: primary,
			want: map[string]bool{"request-volume": false, "error-rate-vs-baseline": false, "p99-latency-vs-baseline": false}},
		{name: "primary never scraped (missing series)", canary: primary, primary: traffic{absent: true},
			want: map[string]bool{"request-volume": true, "error-rate-vs-baseline": false, "p99-latency-vs-baseline": false}},
		{name: "no latency histogram on the canary", canary: traffic{ok: 64}, primary: primary,
			want: map[string]bool{"p99-latency-vs-baseline": false}},
	}

	// media-handler, per second: datagrams relayed and lost through a side
	// as the load's clients count them, and the forwarding latencies of the
	// datagrams it forwarded (its classic buckets). The primary loses 1/32
	// of its datagrams, above the template's 2% floor, so that 1.5× is a
	// float the engine can hit exactly; it forwards in 8 ms, under the 10 ms
	// floor of both p99s. A canary whose p99 is exactly 20 ms (99 of each
	// 100 datagrams in (10, 20] ms, the rest in (20, 30] ms) is then 2× the
	// floored primary exactly. Classic buckets cannot tell 21 from 29 ms:
	// within a bucket a p99 reads as the same place in it.
	mh := mhForwardingBuckets(t)
	forwarding := func(v, perSec float64) map[float64]float64 { return map[float64]float64{v: perSec} }
	mediaPrimary := media{relayed: 62, lost: 2, latency: forwarding(0.008, 62), buckets: mh} // loss 1/32
	withLoss := func(l float64) media {
		return media{relayed: 64 - l, lost: l, latency: forwarding(0.008, 64-l), buckets: mh}
	}
	forwardingIn := func(l map[float64]float64) media { return media{relayed: 100, latency: l, buckets: mh} }
	allMedia := func(pass bool) map[string]bool {
		return map[string]bool{"media-volume": pass, "media-loss-vs-baseline": pass, "forwarding-p99-vs-baseline": pass}
	}
	cases = append(cases, []canaryCase{
		{name: "loss ratio 1.4", canary: withLoss(2.8), primary: mediaPrimary,
			want: allMedia(true),
			near: map[string]float64{"media-loss-vs-baseline": 1.4}, exact: map[string]float64{"forwarding-p99-vs-baseline": 1}},
		{name: "loss ratio 1.5 (at the bound)", canary: withLoss(3), primary: mediaPrimary,
			want:  map[string]bool{"media-loss-vs-baseline": true},
			exact: map[string]float64{"media-loss-vs-baseline": 1.5}},
		{name: "loss ratio 1.55 (just above the bound)", canary: withLoss(3.1), primary: mediaPrimary,
			want: map[string]bool{"media-loss-vs-baseline": false},
			near: map[string]float64{"media-loss-vs-baseline": 1.55}},
		{name: "clean primary, canary 2% loss (the 2% floor)", canary: withLoss(1.28), primary: withLoss(0),
			want: map[string]bool{"media-loss-vs-baseline": true},
			near: map[string]float64{"media-loss-vs-baseline": 1}},
		{name: "clean primary, canary 4% loss", canary: withLoss(2.56), primary: withLoss(0),
			want: map[string]bool{"media-loss-vs-baseline": false},
			near: map[string]float64{"media-loss-vs-baseline": 2}},
		{name: "zero loss on both (lost series at 0)", canary: withLoss(0), primary: withLoss(0),
			want:  allMedia(true),
			exact: map[string]float64{"media-loss-vs-baseline": 0}},
		{name: "both forwarding under 10 ms (p99 floor)", canary: forwardingIn(forwarding(0.008, 100)), primary: forwardingIn(forwarding(0.0001, 100)), // 80× unfloored
			want:  map[string]bool{"forwarding-p99-vs-baseline": true},
			exact: map[string]float64{"forwarding-p99-vs-baseline": 1}},
		{name: "forwarding p99 ratio 2 (at the bound: 20 ms vs the 10 ms floor)", canary: forwardingIn(map[float64]float64{0.015: 99, 0.025: 1}), primary: forwardingIn(forwarding(0.001, 100)),
			want:  map[string]bool{"forwarding-p99-vs-baseline": true},
			exact: map[string]float64{"forwarding-p99-vs-baseline": 2}},
		{name: "canary forwarding in 20–30 ms, primary in 1 ms", canary: forwardingIn(forwarding(0.025, 100)), primary: forwardingIn(forwarding(0.001, 100)),
			want: map[string]bool{"forwarding-p99-vs-baseline": false},
			near: map[string]float64{"forwarding-p99-vs-baseline": 2.99}},
		{name: "canary at 1 datagram/s (20 in the window, at the bound)", canary: media{relayed: 1, latency: forwarding(0.008, 1), buckets: mh}, primary: mediaPrimary,
			want:  map[string]bool{"media-volume": true},
			exact: map[string]float64{"media-volume": 20}},
		{name: "canary at 0.5 datagram/s (10 in the window)", canary: media{relayed: 0.5, latency: forwarding(0.008, 0.5), buckets: mh}, primary: mediaPrimary,
			want: map[string]bool{"media-volume": false}},
		{name: "no datagrams through the canary (joined: flat series)", canary: media{latency: map[float64]float64{}, buckets: mh}, primary: mediaPrimary,
			want: allMedia(false)},
		{name: "canary never joined nor scraped (missing series)", canary: media{absent: true}, primary: mediaPrimary,
			want: allMedia(false)},
		{name: "primary never joined nor scraped (missing series)", canary: mediaPrimary, primary: media{absent: true},
			want: map[string]bool{"media-volume": true, "media-loss-vs-baseline": false, "forwarding-p99-vs-baseline": false}},
		{name: "no forwarding histogram on the canary", canary: media{relayed: 64, buckets: mh}, primary: mediaPrimary,
			want: map[string]bool{"forwarding-p99-vs-baseline": false}},
	}...)
	// The canary load is scraped on its own (the preview's
	// darktower-canary-load ServiceMonitor).
	var loadScrape time.Duration
	for _, m := range All[*monitoringv1.ServiceMonitor](decoded(t, "overlays/preview")) {
		if m.Name == "darktower-canary-load" && len(m.Spec.Endpoints) == 1 {
			loadScrape, _ = time.ParseDuration(string(m.Spec.Endpoints[0].Interval))
		}
	}

	// One figure per set of checks: the first canary judged by it, and the
	// others alike.
	type figure struct {
		canary string
		alike  []string
		rows   []string
	}
	var figures []*figure
	figureOf := map[string]*figure{}
	for _, c := range canaries {
		var checks []string
		readsLoad := false
		for _, m := range c.Spec.Analysis.Metrics {
			checks = append(checks, m.TemplateRef.Name)
			if tmpl := templates[m.TemplateRef.Name]; tmpl != nil && strings.Contains(tmpl.Spec.Query, "darktower_load_") {
				readsLoad = true
			}
		}
		key := strings.Join(checks, ",")
		fig := figureOf[key]
		if fig == nil {
			fig = &figure{canary: c.Name}
			figureOf[key] = fig
			figures = append(figures, fig)
		} else {
			fig.alike = append(fig.alike, c.Name)
			fig = nil // the first canary's rows stand for its alike
		}
		covered := map[string]bool{}

		sm := monitors[c.Spec.TargetRef.Name]
		if sm == nil || len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("%s: no ServiceMonitor with one endpoint in the prod overlay", c.Name)
		}
		scrape, err := time.ParseDuration(string(sm.Spec.Endpoints[0].Interval))
		if err != nil {
			t.Fatalf("%s: ServiceMonitor interval: %v", c.Name, err)
		}
		if readsLoad && loadScrape != scrape {
			t.Fatalf("%s: its analysis reads the canary load's series, scraped every %v (darktower-canary-load, overlays/preview), and its own, every %s: this test writes both in one block of one interval",
				c.Name, loadScrape, scrape)
		}
		target := deployments[c.Spec.TargetRef.Name]
		if target == nil {
			t.Fatalf("%s: no Deployment %s in the prod overlay", c.Name, c.Spec.TargetRef.Name)
		}
		primary := target.DeepCopy()
		primary.Name = flaggerPrimaryName(c)
		canaryPods, primaryPods := podNames(target, 2), podNames(primary, 2)
		// A neighbour whose name starts like the canary's: it must not be
		// read as either side.
		neighbour := &appsv1.Deployment{}
		neighbour.Name = c.Spec.TargetRef.Name + "-worker"
		neighbourPods := podNames(neighbour, 1)

		steps := 12 // one minute of samples; evaluated at the last
		at := time.Unix(0, 0).Add(time.Duration(steps) * scrape)
		for _, cs := range cases {
			judged := false
			for _, m := range c.Spec.Analysis.Metrics {
				if _, ok := cs.want[m.TemplateRef.Name]; ok {
					judged, covered[m.TemplateRef.Name] = true, true
				}
			}
			if !judged {
				continue // a case of another canary's checks
			}
			var b strings.Builder
			fmt.Fprintf(&b, "load %s\n", scrape)
			cs.canary.series(t, &b, c.Namespace, canaryPods, scrape, steps)
			cs.primary.series(t, &b, c.Namespace, primaryPods, scrape, steps)
			traffic{ok: 1, errors: 99, latency: map[float64]float64{10: 100}}.series(t, &b, c.Namespace, neighbourPods, scrape, steps)
			media{relayed: 1, lost: 99, latency: map[float64]float64{0.09: 100}, buckets: mh}.series(t, &b, c.Namespace, neighbourPods, scrape, steps)
			st := promqltest.LoadedStorage(t, b.String())
			srv := promQueryAPI(t, st, at)
			for _, m := range c.Spec.Analysis.Metrics {
				want, ok := cs.want[m.TemplateRef.Name]
				if !ok {
					continue
				}
				q, v, err := runTemplate(c, m, templates[m.TemplateRef.Name], srv.URL)
				got := flaggerPasses(m, v, err)
				result := strconv.FormatFloat(v, 'g', 6, 64)
				if errors.Is(err, providers.ErrNoValuesFound) {
					result = "no values"
				} else if err != nil {
					result = "error: " + err.Error()
				}
				if got != want {
					t.Errorf("%s / %s / %s: Flagger passes=%v (%s), want %v\nquery: %s", c.Name, cs.name, m.Name, got, result, want, q)
				}
				if x, ok := cs.exact[m.TemplateRef.Name]; ok && (err != nil || v != x) {
					t.Errorf("%s / %s / %s: value %v (err %v), want exactly %v (the case tests the bound itself)", c.Name, cs.name, m.Name, v, err, x)
				}
				if x, ok := cs.near[m.TemplateRef.Name]; ok && (err != nil || math.Abs(v/x-1) > 0.05) {
					t.Errorf("%s / %s / %s: value %v (err %v), want within 5%% of %v", c.Name, cs.name, m.Name, v, err, x)
				}
				if fig != nil {
					bound := ""
					if tr := m.ThresholdRange; tr.Max != nil {
						bound = fmt.Sprintf("max %v", *tr.Max)
					} else if tr.Min != nil {
						bound = fmt.Sprintf("min %v", *tr.Min)
					}
					verdict := "pass"
					if !got {
						verdict = "FAIL (counts toward rollback)"
					}
					fig.rows = append(fig.rows, fmt.Sprintf("| %s | %s | %s | %s | %s |", cs.name, m.Name, bound, result, verdict))
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range c.Spec.Analysis.Metrics {
			if !covered[m.TemplateRef.Name] {
				t.Errorf("%s: no case judges its check %s (template %s): add its cases here", c.Name, m.Name, m.TemplateRef.Name)
			}
		}
	}
	for _, fig := range figures {
		alike := ""
		if len(fig.alike) > 0 {
			alike = " and alike for " + strings.Join(fig.alike, ", ")
		}
		t.Logf("FIGURE canary checks on synthetic series (Prometheus engine, Flagger RenderQuery + Prometheus provider), for %s%s:\n| case | check | bound | value | Flagger |\n|---|---|---|---|---|\n%s",
			fig.canary, alike, strings.Join(fig.rows, "\n"))
	}
}
