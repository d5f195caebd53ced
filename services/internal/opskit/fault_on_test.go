//go:build canaryfault

package opskit

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
)

// Run with the tag:
//
//	go test -tags canaryfault ./internal/opskit -run 'Fault'

// The 5xx fraction is exact in every 20 consecutive requests, including
// fractions that are not binary floats (0.1, 0.15, 0.3).
func TestFaultRatioIsExactPerTwentyRequests(t *testing.T) {
	for _, ratio := range []string{"0", "0.05", "0.1", "0.15", "0.25", "0.3", "0.5", "0.95", "1"} {
		l := envconf.FromMap(map[string]string{"DT_FAULT_5XX_RATIO": ratio})
		f := loadAPIFault(l)
		if err := l.Err(); err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /x", func(w http.ResponseWriter, _ *http.Request) {})
		h := f.wrap(mux)
		var failed []bool
		for range 200 {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
			failed = append(failed, rec.Code == http.StatusServiceUnavailable)
		}
		want := int(math.Round(mustFloat(t, ratio) * 20))
		for start := 0; start+20 <= len(failed); start++ {
			n := 0
			for _, x := range failed[start : start+20] {
				if x {
					n++
				}
			}
			if n != want {
				t.Fatalf("DT_FAULT_5XX_RATIO=%s: requests %d-%d had %d 503s, want %d", ratio, start, start+19, n, want)
			}
		}
	}
}

func mustFloat(t *testing.T, s string) float64 {
	var f float64
	if _, err := fmt.Sscanf(s, "%g", &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// Out-of-range or malformed values stop the service at start-up, naming
// the variable.
func TestFaultRefusesBadValues(t *testing.T) {
	for name, vals := range map[string][]string{
		"DT_FAULT_5XX_RATIO": {"1.5", "-0.1", "half", "NaN", "Inf", "20%"},
		"DT_FAULT_DELAY":     {"6s", "-1s", "100", "slow"},
	} {
		for _, v := range vals {
			l := envconf.FromMap(map[string]string{"DEV_SELF_SIGNED_TLS": "true", name: v})
			LoadCommon(l, "svc")
			if err := l.Err(); err == nil || !strings.Contains(err.Error(), name+" is malformed") {
				t.Errorf("%s=%q: err %v, want one naming %s", name, v, err, name)
			}
		}
	}
}

// In a served API, the fault's 503s and delays are counted by the RED
// metrics like real ones; the ops listener is left alone.
func TestFaultIsServedAndCounted(t *testing.T) {
	const delay = 100 * time.Millisecond
	l := envconf.FromMap(map[string]string{"DEV_SELF_SIGNED_TLS": "true", "OPS_ADDR": "127.0.0.1:0", "API_ADDR": "127.0.0.1:0",
		"SHUTDOWN_DELAY": "0s", "DT_FAULT_5XX_RATIO": "0.25", "DT_FAULT_DELAY": delay.String()})
	c := LoadCommon(l, "test")
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	kit, err := NewKit(c, &logs)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(c, kit, &testService{healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	// Said at start-up, before serving (the buffer is not read after).
	if !strings.Contains(logs.String(), "canaryfault build") || !strings.Contains(logs.String(), `"DT_FAULT_5XX_RATIO":"0.25"`) {
		t.Errorf("no start-up warning:\n%s", logs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ops := "http://" + srv.OpsAddr().String()
	api := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	var codes []int
	for range 20 {
		start := time.Now()
		code, body, _ := get(t, api, "https://"+srv.APIAddr().String()+"/v1/items/1")
		if took := time.Since(start); took < delay {
			t.Errorf("an API request took %s, under DT_FAULT_DELAY=%s", took, delay)
		}
		if code == 200 && body != "item 1" {
			t.Errorf("API 200 with %q", body)
		}
		codes = append(codes, code)
	}
	want := []int{200, 200, 200, 503}
	for i, code := range codes {
		if code != want[i%4] {
			t.Fatalf("API codes %v, want every 4th 503", codes)
		}
	}
	// Probes are neither delayed nor failed.
	for _, path := range []string{"/health", "/ready"} {
		start := time.Now()
		if code, _, _ := get(t, http.DefaultClient, ops+path); code != 200 {
			t.Errorf("%s = %d under the fault", path, code)
		}
		if took := time.Since(start); took >= delay {
			t.Errorf("%s took %s: the ops listener was delayed", path, took)
		}
	}
	_, metrics, _ := get(t, http.DefaultClient, ops+"/metrics")
	series := `{listener="api",method="GET",route="GET /v1/items/{id}"}`
	for _, line := range []string{
		`http_requests_total{code="200",listener="api",method="GET",route="GET /v1/items/{id}"} 15`,
		`http_requests_total{code="503",listener="api",method="GET",route="GET /v1/items/{id}"} 5`,
		`http_request_duration_seconds_count` + series + ` 20`,
		// Every request took the delay: none under 50 ms.
		`http_request_duration_seconds_bucket{listener="api",method="GET",route="GET /v1/items/{id}",le="0.05"} 0`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
	var sum float64
	for _, line := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(line, "http_request_duration_seconds_sum"+series+" "); ok {
			sum = mustFloat(t, rest)
		}
	}
	if sum < 20*delay.Seconds() {
		t.Errorf("API latency sum %gs, under 20 × %s", sum, delay)
	}
	if strings.Contains(metrics, `code="503",listener="ops"`) {
		t.Error("the ops listener served a 503")
	}
}

// DT_FAULT_ROUTES limits the fault to the routes named: the others are
// served at once and never fail.
func TestFaultRoutesLimitTheFault(t *testing.T) {
	l := envconf.FromMap(map[string]string{"DT_FAULT_5XX_RATIO": "1", "DT_FAULT_DELAY": "50ms", "DT_FAULT_ROUTES": " GET /slow , POST /also"})
	f := loadAPIFault(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range []string{"GET /slow", "POST /also", "GET /fine"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {})
	}
	h := f.wrap(mux)
	for _, c := range []struct {
		method, path string
		faulted      bool
	}{{"GET", "/slow", true}, {"POST", "/also", true}, {"GET", "/fine", false}, {"GET", "/unmatched", false}} {
		start := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		took := time.Since(start)
		if got := rec.Code == http.StatusServiceUnavailable; got != c.faulted {
			t.Errorf("%s %s: code %d, faulted = %v, want %v", c.method, c.path, rec.Code, got, c.faulted)
		}
		if delayed := took >= 50*time.Millisecond; delayed != c.faulted {
			t.Errorf("%s %s took %s: delayed = %v, want %v", c.method, c.path, took, delayed, c.faulted)
		}
	}
}

// DT_FAULT_MIN_LATENCY answers no faulted request sooner than the floor,
// whether the handler writes a body, only a status, or nothing.
func TestFaultMinLatencyIsAFloor(t *testing.T) {
	const floor = 80 * time.Millisecond
	l := envconf.FromMap(map[string]string{"DT_FAULT_MIN_LATENCY": floor.String(), "DT_FAULT_ROUTES": "GET /body,GET /status,GET /nothing"})
	f := loadAPIFault(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /body", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /nothing", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /other", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(f.wrap(mux))
	defer srv.Close()
	for path, floored := range map[string]bool{"/body": true, "/status": true, "/nothing": true, "/other": false} {
		start := time.Now()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if took := time.Since(start); (took >= floor) != floored {
			t.Errorf("%s answered in %s; floored = %v, want %v", path, took, took >= floor, floored)
		}
	}
}
