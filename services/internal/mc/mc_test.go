package mc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
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
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second})
	defer svc.Close()
	rdy := opskit.NewReadiness(kit.Registry, time.Second, svc.Checks())
	mux := http.NewServeMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()
	token := iss.Token(t, "media-handler", "meeting-controller")
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
	if rep := rdy.Evaluate(context.Background()); !rep.Ready {
		t.Fatalf("not ready with Redis up and a fresh registration: %+v", rep)
	}
	if code, body := call("POST", mh); code != 200 {
		t.Fatalf("register = %d %s", code, body)
	}
	mh2 := mh
	mh2.ID, mh2.MediaAddr = "mh-1", "10.0.0.8:443"
	if code, _ := call("POST", mh2); code != 200 {
		t.Fatal("second MH")
	}
	code, body := call("GET", nil)
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
	// Registration older than three heartbeat intervals: not ready.
	svc.gcReg.Mark(time.Now().Add(-3*time.Second - time.Millisecond))
	if rep := rdy.Evaluate(context.Background()); rep.Ready || rep.Components["gc_registration"] {
		t.Fatalf("ready with a stale GC registration: %+v", rep)
	}
}

func redisZ(member string, at time.Time) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: member}
}
