package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/pgstore"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/jackc/pgx/v5/pgconn"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) {
	testenv.MainWith(m, testenv.StartPostgres, func(s *testenv.Postgres) { pg = s })
}

func TestRegistryBehindTokens(t *testing.T) {
	dbURL, err := pg.CreateDatabase("gc_registry")
	if err != nil {
		t.Fatal(err)
	}
	iss := testenv.NewIssuer(t)
	kit, logs := testenv.Kit(t, "global-controller", "")
	kit.HTTPClient = iss.Server.Client()
	s, err := New(context.Background(), kit, Config{DatabaseURL: envconf.NewSecret(dbURL), JWKSURL: iss.JWKSURL(),
		Issuer: "https://ac-service", Audience: "global-controller", JWKSRefresh: time.Minute, MCTTL: 30 * time.Second, DBMaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	svc := s.(*Service)
	rdy := opskit.NewReadiness(kit.Registry, time.Second, svc.Checks())
	if rep := rdy.Evaluate(context.Background()); rep.Ready {
		t.Fatalf("ready before migration and JWKS fetch: %+v", rep)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; svc.Close() }()
	deadline := time.Now().Add(15 * time.Second)
	for !rdy.Evaluate(context.Background()).Ready {
		if time.Now().After(deadline) {
			t.Fatalf("GC never ready: %+v\n%s", rdy.Evaluate(context.Background()), logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()

	call := func(method, token string, body any) (int, []byte) {
		code, resp, _ := testenv.CallJSON(t, api.Client(), method, api.URL+"/v1/meeting-controllers", token, body)
		return code, resp
	}
	good := iss.Token(t, "meeting-controller", "global-controller", "mc-*")
	reg := wire.MCRegistration{ID: "mc-0", Endpoint: "https://mc-0.meeting-controller:443", Region: "us-west"}
	live := func() string {
		var b strings.Builder
		families, err := kit.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "gc_meeting_controllers_live" {
				for _, m := range f.GetMetric() {
					fmt.Fprintf(&b, "%g", m.GetGauge().GetValue())
				}
			}
		}
		return b.String()
	}
	if got := live(); got != "0" {
		t.Fatalf("gc_meeting_controllers_live before any registration = %q, want 0", got)
	}
	if code, body := call("POST", good, reg); code != 200 {
		t.Fatalf("register = %d %s", code, body)
	}
	if got := live(); got != "1" {
		t.Fatalf("gc_meeting_controllers_live after mc-0 registered = %q, want 1", got)
	}
	reg.Endpoint = "https://mc-0.meeting-controller:8443"
	if code, _ := call("POST", good, reg); code != 200 {
		t.Fatalf("heartbeat = %d", code)
	}
	code, body := call("GET", good, nil)
	var listed struct {
		MeetingControllers []wire.MeetingController `json:"meeting_controllers"`
	}
	if err := json.Unmarshal(body, &listed); code != 200 || err != nil || len(listed.MeetingControllers) != 1 ||
		listed.MeetingControllers[0].Endpoint != reg.Endpoint {
		t.Fatalf("list = %d %s", code, body)
	}
	for name, c := range map[string]struct {
		token string
		body  any
		code  int
	}{
		"no token":       {"", reg, 401},
		"wrong audience": {iss.Token(t, "media-handler", "meeting-controller"), reg, 401},
		"garbage token":  {"abc.def.ghi", reg, 401},
		"malformed body": {good, `{"id":`, 400},
		"unknown field":  {good, `{"id":"mc-1","endpoint":"https://x","region":"r","admin":true}`, 400},
		"http endpoint":  {good, wire.MCRegistration{ID: "mc-1", Endpoint: "http://x", Region: "r"}, 400},
		"invalid id":     {good, wire.MCRegistration{ID: "MC 1", Endpoint: "https://x", Region: "r"}, 400},
		"id not owned":   {good, wire.MCRegistration{ID: "gc-1", Endpoint: "https://x", Region: "r"}, 403},
		"no instances":   {iss.Token(t, "meeting-controller", "global-controller"), reg, 403},
	} {
		if code, body := call("POST", c.token, c.body); code != c.code {
			t.Errorf("%s: %d %s, want %d", name, code, body, c.code)
		}
	}
	// Finding 4: another client (valid token, right audience, its own
	// instances) cannot overwrite mc-0's endpoint; the owner still can.
	foreign := iss.Token(t, "ops-tool", "global-controller", "ops-*")
	hijack := wire.MCRegistration{ID: "mc-0", Endpoint: "https://attacker.example", Region: "us-west"}
	if code, body := call("POST", foreign, hijack); code != http.StatusForbidden {
		t.Fatalf("foreign subject registering mc-0 = %d %s, want 403", code, body)
	}
	exact := iss.Token(t, "meeting-controller", "global-controller", "mc-0")
	if code, body := call("POST", exact, reg); code != 200 {
		t.Fatalf("owner (exact id) heartbeat = %d %s", code, body)
	}
	if _, body := call("GET", good, nil); bytes.Contains(body, []byte("attacker.example")) || !bytes.Contains(body, []byte(reg.Endpoint)) {
		t.Fatalf("registration overwritten: %s", body)
	}
	if !strings.Contains(logs.String(), "registration refused") {
		t.Error("refused registration not logged")
	}
	// An MC whose heartbeats stopped drops out of the list.
	if _, err := svc.pool.Exec(context.Background(), `UPDATE meeting_controllers SET last_heartbeat = now() - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	if _, body := call("GET", good, nil); bytes.Contains(body, []byte("mc-0")) {
		t.Fatalf("stale MC still listed: %s", body)
	}
	if got := live(); got != "0" {
		t.Fatalf("gc_meeting_controllers_live with mc-0 stale = %q, want 0", got)
	}
}

// The pool's utilization is on /metrics: the ADR's connection pool alerts
// (infra/platform/observability/alerts.yaml) are computed from it.
func TestPoolUtilizationIsExported(t *testing.T) {
	dbURL, err := pg.CreateDatabase("gc_pool_metrics")
	if err != nil {
		t.Fatal(err)
	}
	kit, _ := testenv.Kit(t, "global-controller", "")
	s, err := New(context.Background(), kit, Config{DatabaseURL: envconf.NewSecret(dbURL), JWKSURL: "https://127.0.0.1:1/jwks",
		Issuer: "https://ac-service", Audience: "global-controller", JWKSRefresh: time.Minute, MCTTL: 30 * time.Second, DBMaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := s.(*Service).pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	families, err := kit.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue()
		}
	}
	if got["db_pool_connections,state=acquired"] != 1 || got["db_pool_max_connections"] != 4 {
		t.Fatalf("pool metrics: %v", got)
	}
}

// Every pooled connection carries server-side statement and lock timeouts.
func TestDatabaseTimeoutsAreServerSide(t *testing.T) {
	dbURL, err := pg.CreateDatabase("gc_timeouts")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.Open(envconf.NewSecret(dbURL), 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	var st, lt string
	if err := pool.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('lock_timeout')`).Scan(&st, &lt); err != nil {
		t.Fatal(err)
	}
	if st != "5s" || lt != "2s" {
		t.Fatalf("statement_timeout %q, lock_timeout %q", st, lt)
	}
	// A statement running past the timeout is cancelled by the server
	// (the client's context has no deadline).
	start := time.Now()
	_, err = pool.Exec(ctx, `SELECT pg_sleep(30)`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("pg_sleep(30) = %v, want query_canceled (57014)", err)
	}
	slept := time.Since(start)
	// A lock wait past lock_timeout fails too.
	if _, err := pool.Exec(ctx, `CREATE TABLE held (id int PRIMARY KEY); INSERT INTO held VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT id FROM held WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = pool.Exec(ctx, `UPDATE held SET id = 2 WHERE id = 1`)
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
		t.Fatalf("update of a locked row = %v, want lock_not_available (55P03)", err)
	}
	waited := time.Since(start)
	t.Logf("FIGURE server-side timeouts: pg_sleep(30) cancelled after %s (statement_timeout 5s); lock wait ended after %s (lock_timeout 2s)",
		slept.Round(time.Millisecond), waited.Round(time.Millisecond))
	if slept > 7*time.Second || waited > 4*time.Second {
		t.Fatal("timeouts fired late")
	}
}
