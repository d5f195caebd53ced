package mc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/redis/go-redis/v9"
)

var rds *testenv.Redis

func TestMain(m *testing.M) {
	testenv.MainWith(m, testenv.StartRedis, func(s *testenv.Redis) { rds = s })
}

func TestMediaHandlerRegistryInRedis(t *testing.T) {
	exerciseRegistry(t, rds.Addr(), false)
}

// ADR-0012 §5 runs Redis as a cluster: the same behaviour against a real
// three-master Redis Cluster, MC connected through one node.
func TestMediaHandlerRegistryOnRedisCluster(t *testing.T) {
	cluster, err := testenv.StartRedisCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	exerciseRegistry(t, cluster.Addr(), true)
}

func exerciseRegistry(t *testing.T, addr string, cluster bool) {
	iss := testenv.NewIssuer(t)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	kit.HTTPClient = iss.Server.Client()
	svc := NewService(kit, Config{ID: "mc-0", Region: "local", RedisAddr: addr, RedisCluster: cluster, JWKSURL: iss.JWKSURL(),
		Issuer: "https://ac-service", Audience: "meeting-controller", ClientSecret: envconf.NewSecret("x"),
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second, MHWarmup: time.Minute})
	defer svc.Close()
	rdy := opskit.NewReadiness(kit.Registry, time.Second, svc.Checks())
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()
	token := iss.Token(t, "media-handler", "meeting-controller", "mh-*")
	call := func(method string, body any) (int, []byte) {
		code, resp, _ := testenv.CallJSON(t, api.Client(), method, api.URL+"/v1/media-handlers", token, body)
		return code, resp
	}
	mh := wire.MHRegistration{ID: "mh-0", MediaAddr: "10.0.0.7:443", Endpoint: "https://mh-0:8443", Utilization: 0.1, Admitting: true}

	rep := rdy.Evaluate(context.Background())
	if rep.Ready || !rep.Components["redis"] || rep.Components["gc_registration"] {
		t.Fatalf("before GC registration: %+v", rep)
	}
	if code, _ := call("POST", mh); code != http.StatusServiceUnavailable {
		t.Fatalf("MC took an MH registration while not registered with GC: %d", code)
	}
	// The GC side of registration is exercised end to end (services/e2e);
	// here it is recorded directly to test the Redis registry alone.
	svc.gcReg.Mark(time.Now())
	// Warming up: registered with GC, no media-handler yet: not in
	// service (every ticket would fail), but taking MH registrations.
	if rep := rdy.Evaluate(context.Background()); rep.Ready || !rep.Components["gc_registration"] || rep.Components["media_handler_warmup"] {
		t.Fatalf("ready before any media-handler registered: %+v", rep)
	}
	code, body := call("POST", mh)
	var reply wire.MHRegistrationReply
	if err := json.Unmarshal(body, &reply); code != 200 || err != nil || reply.ID != "mh-0" {
		t.Fatalf("register = %d %s", code, body)
	}
	if rep := rdy.Evaluate(context.Background()); !rep.Ready {
		t.Fatalf("not ready with Redis up, a fresh registration and a media-handler: %+v", rep)
	}
	if _, err := mticket.DecodeKey(reply.TicketKey.KeyID, reply.TicketKey.Secret); err != nil {
		t.Fatalf("registration reply carries no usable ticket key: %v", err)
	}
	mh2 := mh
	mh2.ID, mh2.MediaAddr = "mh-1", "10.0.0.8:443"
	if code, _ := call("POST", mh2); code != 200 {
		t.Fatal("second MH")
	}
	code, body = call("GET", nil)
	if code != 200 || !strings.Contains(string(body), `"mh-0"`) || !strings.Contains(string(body), `"mh-1"`) {
		t.Fatalf("list = %d %s", code, body)
	}
	// mh-1 stops heartbeating: it is pruned from both Redis structures.
	ctx := context.Background()
	svc.rdb.ZAdd(ctx, svc.heartbeatKey(), redisZ("mh-1", time.Now().Add(-time.Minute)))
	if _, body := call("GET", nil); strings.Contains(string(body), `"mh-1"`) {
		t.Fatalf("stale MH listed: %s", body)
	}
	if ok, _ := svc.rdb.HExists(ctx, svc.registryKey(), "mh-1").Result(); ok {
		t.Fatal("stale MH left in the registry hash")
	}
	if code, _ := call("POST", wire.MHRegistration{ID: "mh-2", MediaAddr: "no-port", Endpoint: "https://x"}); code != 400 {
		t.Fatalf("bad media_addr = %d", code)
	}
	// Finding 4: a client that does not own mh-0 cannot overwrite its
	// media_addr; the owner can.
	hijack := mh
	hijack.MediaAddr = "203.0.113.66:443"
	for name, tok := range map[string]string{
		"other client":    iss.Token(t, "ops-tool", "meeting-controller", "ops-*"),
		"no instances":    iss.Token(t, "media-handler", "meeting-controller"),
		"prefix is not *": iss.Token(t, "media-handler", "meeting-controller", "mh-"),
	} {
		code, body, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+"/v1/media-handlers", tok, hijack)
		if code != http.StatusForbidden {
			t.Fatalf("%s registering mh-0 = %d %s, want 403", name, code, body)
		}
	}
	if _, body := call("GET", nil); strings.Contains(string(body), "203.0.113.66") {
		t.Fatalf("registration overwritten: %s", body)
	}
	owner := iss.Token(t, "media-handler", "meeting-controller", "mh-0")
	if code, body, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+"/v1/media-handlers", owner, mh); code != 200 {
		t.Fatalf("owner heartbeat = %d %s", code, body)
	}
	// Registration older than three heartbeat intervals: not ready.
	svc.gcReg.Mark(time.Now().Add(-3*time.Second - time.Millisecond))
	if rep := rdy.Evaluate(context.Background()); rep.Ready || rep.Components["gc_registration"] {
		t.Fatalf("ready with a stale GC registration: %+v", rep)
	}
}

func redisZ(member string, at time.Time) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: member}
}

// Media admission: MC issues join tickets only to the clients configured in
// MC_TICKET_CLIENTS, for a live admitting MH, signed with the key it hands
// MHs at registration.
func TestMediaTickets(t *testing.T) {
	iss := testenv.NewIssuer(t)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	kit.HTTPClient = iss.Server.Client()
	svc := NewService(kit, Config{ID: "mc-tickets", Region: "local", RedisAddr: rds.Addr(), JWKSURL: iss.JWKSURL(),
		Issuer: "https://ac-service", Audience: "meeting-controller", ClientSecret: envconf.NewSecret("x"),
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second, TicketTTL: time.Minute, TicketClients: []string{"signalling"}})
	defer svc.Close()
	svc.gcReg.Mark(time.Now())
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()
	call := func(path, subject string, body any) (int, []byte) {
		code, resp, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+path, iss.Token(t, subject, "meeting-controller", "mh-*"), body)
		return code, resp
	}
	req := wire.MediaTicketRequest{SessionID: "meeting-1", ParticipantID: "alice"}
	if code, _ := call("/v1/media-tickets", "signalling", req); code != http.StatusServiceUnavailable {
		t.Fatalf("ticket without any MH = %d, want 503", code)
	}
	busy := wire.MHRegistration{ID: "mh-busy", MediaAddr: "10.0.0.1:443", Endpoint: "https://mh-busy", Utilization: 0.9, Admitting: false}
	free := wire.MHRegistration{ID: "mh-free", MediaAddr: "10.0.0.2:443", Endpoint: "https://mh-free", Utilization: 0.1, Admitting: true}
	var reply wire.MHRegistrationReply
	for _, mh := range []wire.MHRegistration{busy, free} {
		code, body := call("/v1/media-handlers", "media-handler", mh)
		if code != 200 || json.Unmarshal(body, &reply) != nil {
			t.Fatalf("register %s = %d %s", mh.ID, code, body)
		}
	}
	key, err := mticket.DecodeKey(reply.TicketKey.KeyID, reply.TicketKey.Secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"media-handler", "e2e-anyone"} {
		if code, _ := call("/v1/media-tickets", subject, req); code != http.StatusForbidden {
			t.Fatalf("ticket for %s = %d, want 403", subject, code)
		}
	}
	for _, bad := range []any{wire.MediaTicketRequest{SessionID: "", ParticipantID: "a"},
		wire.MediaTicketRequest{SessionID: strings.Repeat("s", 65), ParticipantID: "a"}, `{"session_id":"s","participant_id":"a","x":1}`} {
		if code, _ := call("/v1/media-tickets", "signalling", bad); code != http.StatusBadRequest {
			t.Fatalf("bad request %v = %d", bad, code)
		}
	}
	code, body := call("/v1/media-tickets", "signalling", req)
	var mt wire.MediaTicket
	if code != 200 || json.Unmarshal(body, &mt) != nil {
		t.Fatalf("ticket = %d %s", code, body)
	}
	if mt.MediaHandler != "mh-free" || mt.MediaAddr != free.MediaAddr {
		t.Fatalf("placed on %s (%s), want the admitting mh-free", mt.MediaHandler, mt.MediaAddr)
	}
	raw, err := base64.RawURLEncoding.DecodeString(mt.Ticket)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := mticket.Parse(raw)
	if err != nil || !tk.Verify(key) || string(tk.Session) != "meeting-1" || string(tk.Participant) != "alice" ||
		string(tk.MediaHandler) != "mh-free" {
		t.Fatalf("ticket %+v does not verify under the registration key (%v)", tk, err)
	}
	if d := time.Until(tk.Expiry); d > time.Minute || d < 50*time.Second {
		t.Fatalf("ticket expires in %s, want about MC_TICKET_TTL", d)
	}
	// MC not ready (its GC registration is stale): no new session is placed.
	svc.gcReg.Mark(time.Now().Add(-time.Minute))
	if code, _ := call("/v1/media-tickets", "signalling", req); code != http.StatusServiceUnavailable {
		t.Fatalf("ticket from an MC that is not ready = %d, want 503", code)
	}
}

// A starting MC with no media-handler is ready once MC_MH_WARMUP has
// passed (an MC must not wait forever for MHs), and stays so.
func TestWarmupEnds(t *testing.T) {
	rds, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rds.Stop)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	svc := NewService(kit, Config{ID: "mc-0", Region: "local", RedisAddr: rds.Addr(), ClientSecret: envconf.NewSecret("x"),
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second, MHWarmup: 300 * time.Millisecond})
	defer svc.Close()
	if err := svc.warmedUp(context.Background()); err == nil || !strings.Contains(err.Error(), "MC_MH_WARMUP") {
		t.Fatalf("just started, no media-handler: %v", err)
	}
	time.Sleep(350 * time.Millisecond)
	if err := svc.warmedUp(context.Background()); err != nil {
		t.Fatalf("after the warm-up: %v", err)
	}
}
