package gc

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
)

// TestLivenessWindowFollowsTheFlagAtEachList: an MC whose last heartbeat
// is 45 s old is not listed with the flag at its static default (GC_MC_TTL,
// 30 s, as before flags); with gc.registry.mc_ttl_seconds 60 (applied to
// GC's flag client as the gateway pushes it) the next list has it; the key
// deleted, GC_MC_TTL again. Without a gateway configured readiness has no flags entry.
func TestLivenessWindowFollowsTheFlagAtEachList(t *testing.T) {
	dbURL, err := pg.CreateDatabase("gc_flags")
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
	if _, listed := rdy.Evaluate(context.Background()).Components["flags"]; listed {
		t.Fatal("a flags entry in readiness with no gateway configured")
	}
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()
	tok := iss.Token(t, "meeting-controller", "global-controller", "mc-*")
	code, body, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+"/v1/meeting-controllers", tok,
		wire.MCRegistration{ID: "mc-quiet", Endpoint: "https://mc-quiet:443", Region: "local"})
	if code != 200 {
		t.Fatalf("register = %d %s", code, body)
	}
	if _, err := svc.pool.Exec(context.Background(), `UPDATE meeting_controllers SET last_heartbeat = now() - interval '45 seconds'`); err != nil {
		t.Fatal(err)
	}
	listed := func() bool {
		t.Helper()
		code, body, _ := testenv.CallJSON(t, api.Client(), "GET", api.URL+"/v1/meeting-controllers", tok, nil)
		if code != 200 {
			t.Fatalf("list = %d %s", code, body)
		}
		return strings.Contains(string(body), `"mc-quiet"`)
	}
	if listed() {
		t.Fatal("an MC silent for 45 s is listed with GC_MC_TTL 30 s")
	}
	svc.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: 3,
		Flags: []flags.Entry{{Name: flags.GcRegistryMcTtlSeconds, Value: "60", ModRevision: 3}}})
	if !listed() || svc.MCTTL() != time.Minute {
		t.Fatalf("not listed with gc.registry.mc_ttl_seconds 60 (window %s)", svc.MCTTL())
	}
	svc.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: 4,
		Flags: []flags.Entry{{Name: flags.GcRegistryMcTtlSeconds, Deleted: true, ModRevision: 4}}})
	if listed() {
		t.Fatal("the key deleted, the MC is still listed: GC_MC_TTL not back")
	}
}
