package opskit

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// http_request_duration_seconds is both histograms: the classic DefBuckets
// (what the alerts read) and a native one of schema 4 (bucket factor
// 2^(1/16) ≈ 1.044, what the canary's p99 check reads), in which 9 ms and
// 17.1 ms (1.9×) land in buckets whose bounds are 1.9× apart within 4.4%.
func TestRequestDurationIsClassicAndNative(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newHTTPMetrics(reg)
	h := m.duration.WithLabelValues("api", "GET /x", "GET")
	h.Observe(0.009)
	h.Observe(0.0171)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "http_request_duration_seconds" {
			continue
		}
		hist := mf.GetMetric()[0].GetHistogram()
		if n := len(hist.GetBucket()); n != len(prometheus.DefBuckets) {
			t.Errorf("%d classic buckets, want DefBuckets' %d", n, len(prometheus.DefBuckets))
		}
		if s := hist.GetSchema(); s != 4 {
			t.Errorf("native schema %d, want 4 (bucket factor 1.05)", s)
		}
		// Two observations, two positive spans of one bucket each.
		var idx []int32
		var at int32
		for i, span := range hist.GetPositiveSpan() {
			if i == 0 {
				at = span.GetOffset()
			} else {
				at += span.GetOffset()
			}
			for range span.GetLength() {
				idx = append(idx, at)
				at++
			}
		}
		if len(idx) != 2 {
			t.Fatalf("native buckets at %v, want two", idx)
		}
		upper := func(i int32) float64 { return math.Pow(2, float64(i)/16) }
		ratio := upper(idx[1]) / upper(idx[0])
		if math.Abs(ratio/1.9-1) > 0.0443 {
			t.Errorf("bucket tops %g and %g: ratio %g, not within 4.4%% of 1.9", upper(idx[0]), upper(idx[1]), ratio)
		}
		t.Logf("9 ms in (%.5f, %.5f], 17.1 ms in (%.5f, %.5f]: top ratio %.4f", upper(idx[0]-1), upper(idx[0]), upper(idx[1]-1), upper(idx[1]), ratio)
		return
	}
	t.Fatal("http_request_duration_seconds not gathered")
}
