package opskit

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadinessAggregatesAndRunsChecksConcurrently(t *testing.T) {
	// Each check waits for the other to start: run one after the other, they
	// would both time out and report unhealthy.
	aStarted, bStarted := make(chan struct{}), make(chan struct{})
	r := NewReadiness(prometheus.NewRegistry(), 2*time.Second, []Check{
		{Name: "database", Func: func(ctx context.Context) error {
			close(aStarted)
			select {
			case <-bStarted:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{Name: "signing_key", Func: func(ctx context.Context) error {
			close(bStarted)
			select {
			case <-aStarted:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
	})
	rep := r.Evaluate(context.Background())
	if !rep.Ready || !rep.Components["database"] || !rep.Components["signing_key"] {
		t.Fatalf("report = %+v, want both healthy (checks did not run concurrently)", rep)
	}
	body, _ := json.Marshal(rep)
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	if m["status"] != "ready" || m["database"] != "healthy" || m["signing_key"] != "healthy" || len(m) != 3 {
		t.Fatalf("JSON = %s", body)
	}
}

func TestReadinessFailureHangAndDrain(t *testing.T) {
	reg := prometheus.NewRegistry()
	hang := make(chan struct{})
	defer close(hang)
	r := NewReadiness(reg, 100*time.Millisecond, []Check{
		{Name: "redis", Func: func(context.Context) error { return errors.New("connection refused") }},
		{Name: "stuck", Func: func(context.Context) error { <-hang; return nil }}, // ignores its context
		{Name: "ok", Func: func(context.Context) error { return nil }},
	})
	rep := r.Evaluate(context.Background())
	if rep.Ready || rep.Components["redis"] || rep.Components["stuck"] || !rep.Components["ok"] {
		t.Fatalf("report = %+v", rep)
	}
	if v := testutil.ToFloat64(r.up.WithLabelValues("redis")); v != 0 {
		t.Errorf("dependency_up{redis} = %v", v)
	}
	if v := testutil.ToFloat64(r.up.WithLabelValues("ok")); v != 1 {
		t.Errorf("dependency_up{ok} = %v", v)
	}
	healthy := NewReadiness(prometheus.NewRegistry(), time.Second, []Check{{Name: "ok", Func: func(context.Context) error { return nil }}})
	healthy.StartDraining()
	if rep := healthy.Evaluate(context.Background()); rep.Ready || !rep.Draining {
		t.Fatalf("draining but ready: %+v", rep)
	}
}

func TestLoadCommonRequiresCertificatesUnlessDevFlag(t *testing.T) {
	l := envconf.FromMap(map[string]string{})
	LoadCommon(l, "svc")
	err := l.Err()
	if err == nil || !strings.Contains(err.Error(), "TLS_CERT_FILE is required") || !strings.Contains(err.Error(), "TLS_KEY_FILE is required") {
		t.Fatalf("err = %v", err)
	}
	l = envconf.FromMap(map[string]string{"DEV_SELF_SIGNED_TLS": "true", "LOG_LEVEL": "loud"})
	c := LoadCommon(l, "svc")
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") || strings.Contains(err.Error(), "TLS_CERT_FILE") {
		t.Fatalf("err = %v", err)
	}
	if c.OpsAddr != ":8080" || c.APIAddr != ":8443" || c.ShutdownDelay+c.ShutdownGrace >= 30*time.Second {
		t.Fatalf("defaults = %+v (delay+grace must stay under the manifests' 30 s)", c)
	}
}

// testService has one API route that blocks until released.
type testService struct {
	entered chan struct{}
	release chan struct{}
	healthy bool
}

func (s *testService) Routes(mux *Mux) {
	mux.HandleFunc("GET /v1/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slow") != "" {
			close(s.entered)
			<-s.release
		}
		_, _ = io.WriteString(w, "item "+r.PathValue("id"))
	})
}
func (s *testService) Checks() []Check {
	return []Check{{Name: "dep", Func: func(context.Context) error {
		if !s.healthy {
			return errors.New("down")
		}
		return nil
	}}}
}
func (s *testService) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (s *testService) Close()                        {}

func startServer(t *testing.T, svc Service, delay time.Duration) (*Server, *bytes.Buffer, context.CancelFunc, chan error) {
	t.Helper()
	var logs bytes.Buffer
	c := Common{Service: "test", OpsAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", DevSelfSignedTLS: true,
		ShutdownDelay: delay, ShutdownGrace: 10 * time.Second, ReadyTimeout: time.Second}
	kit, err := NewKit(c, &logs)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(c, kit, svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, &logs, cancel, done
}

func get(t *testing.T, c *http.Client, url string) (int, string, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func TestServerEndpointsAndBoundedMetrics(t *testing.T) {
	svc := &testService{healthy: true}
	srv, _, _, _ := startServer(t, svc, 0)
	ops := "http://" + srv.OpsAddr().String()
	api := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}

	if code, body, _ := get(t, http.DefaultClient, ops+"/health"); code != 200 || body != "OK" {
		t.Fatalf("/health = %d %q", code, body)
	}
	// Before any API request, each route's series already exist at zero
	// (a canary's checks need two samples of a series).
	_, before, _ := get(t, http.DefaultClient, ops+"/metrics")
	for _, want := range []string{
		`http_requests_total{code="200",listener="api",method="GET",route="GET /v1/items/{id}"} 0`,
		`http_request_duration_seconds_count{listener="api",method="GET",route="GET /v1/items/{id}"} 0`,
	} {
		if !strings.Contains(before, want) {
			t.Errorf("before the first request, /metrics lacks %s", want)
		}
	}
	if code, body, _ := get(t, http.DefaultClient, ops+"/ready"); code != 200 || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("/ready = %d %s", code, body)
	}
	svc.healthy = false
	if code, body, _ := get(t, http.DefaultClient, ops+"/ready"); code != 503 || !strings.Contains(body, `"dep":"unhealthy"`) {
		t.Fatalf("/ready with dependency down = %d %s", code, body)
	}
	// /health does not care about dependencies.
	if code, _, _ := get(t, http.DefaultClient, ops+"/health"); code != 200 {
		t.Fatal("/health followed a dependency")
	}
	for _, id := range []string{"alice@example.com", "10.1.2.3", "secret-token"} {
		code, body, resp := get(t, api, "https://"+srv.APIAddr().String()+"/v1/items/"+id)
		if code != 200 || body != "item "+id || resp.ProtoMajor != 2 {
			t.Fatalf("API = %d %q over HTTP/%d, want 200 over HTTP/2", code, body, resp.ProtoMajor)
		}
	}
	_, _, _ = get(t, api, "https://"+srv.APIAddr().String()+"/no/such/path")
	_, metrics, _ := get(t, http.DefaultClient, ops+"/metrics")
	for _, want := range []string{
		`http_requests_total{code="200",listener="api",method="GET",route="GET /v1/items/{id}"} 3`,
		`http_requests_total{code="404",listener="api",method="GET",route="unmatched"} 1`,
		`dependency_up{dependency="dep"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, pii := range []string{"alice@example.com", "10.1.2.3", "secret-token", "/no/such/path"} {
		if strings.Contains(metrics, pii) {
			t.Errorf("metrics carry %q in a label", pii)
		}
	}
}

func TestShutdownTurnsNotReadyAndDrainsInFlight(t *testing.T) {
	svc := &testService{healthy: true, entered: make(chan struct{}), release: make(chan struct{})}
	srv, logs, cancel, done := startServer(t, svc, 300*time.Millisecond)
	ops := "http://" + srv.OpsAddr().String()
	api := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := api.Get("https://" + srv.APIAddr().String() + "/v1/items/7?slow=1")
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inflight <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-svc.entered
	cancel() // what SIGTERM does in Main
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ := get(t, http.DefaultClient, ops+"/ready")
		if code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/ready never turned 503 after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("server stopped (%v) with a request in flight", err)
	default:
	}
	close(svc.release)
	if r := <-inflight; r.err != nil || r.code != 200 || r.body != "item 7" {
		t.Fatalf("in-flight request = %+v, want 200 'item 7'", r)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want clean stop", err)
	}
	done <- nil // for the cleanup's receive
	if !strings.Contains(logs.String(), `"msg":"stopped cleanly"`) {
		t.Errorf("logs lack the clean-stop line:\n%s", logs)
	}
}

func TestDrainTimeoutIsAnError(t *testing.T) {
	svc := &testService{healthy: true, entered: make(chan struct{}), release: make(chan struct{})}
	defer close(svc.release)
	var logs bytes.Buffer
	c := Common{Service: "test", OpsAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", DevSelfSignedTLS: true,
		ShutdownGrace: 200 * time.Millisecond, ReadyTimeout: time.Second}
	kit, _ := NewKit(c, &logs)
	srv, err := NewServer(c, kit, svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	api := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	go func() { _, _ = api.Get("https://" + srv.APIAddr().String() + "/v1/items/1?slow=1") }()
	<-svc.entered
	cancel()
	if err := <-done; !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("Run = %v, want ErrDrainTimeout", err)
	}
}

func TestPortConflictIsReportedAtStart(t *testing.T) {
	svc := &testService{healthy: true}
	srv, _, _, _ := startServer(t, svc, 0)
	c := Common{Service: "test", OpsAddr: srv.OpsAddr().String(), APIAddr: "127.0.0.1:0", DevSelfSignedTLS: true}
	kit, _ := NewKit(c, io.Discard)
	if _, err := NewServer(c, kit, svc); err == nil || !strings.Contains(err.Error(), "OPS_ADDR") {
		t.Fatalf("err = %v, want it to name OPS_ADDR", err)
	}
}

func TestInformationalChecksAreReportedButDoNotFailReadiness(t *testing.T) {
	r := NewReadiness(prometheus.NewRegistry(), time.Second, []Check{
		{Name: "signing_key", Func: func(context.Context) error { return nil }},
		{Name: "database", Informational: true, Func: func(context.Context) error { return errors.New("down") }},
	})
	rep := r.Evaluate(context.Background())
	if !rep.Ready || rep.Components["database"] {
		t.Fatalf("report = %+v, want ready with database unhealthy", rep)
	}
	if v := testutil.ToFloat64(r.up.WithLabelValues("database")); v != 0 {
		t.Fatalf("dependency_up{database} = %g", v)
	}
	body, _ := json.Marshal(rep)
	if !strings.Contains(string(body), `"database":"unhealthy"`) || !strings.Contains(string(body), `"status":"ready"`) {
		t.Fatalf("JSON = %s", body)
	}
}
