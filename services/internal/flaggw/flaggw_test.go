package flaggw_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/flags"
)

// TestChangesReachEveryClientWithin100ms: an etcd write is pushed to every
// subscribed client; the ADR's bound is 100 ms.
func TestChangesReachEveryClientWithin100ms(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	g := startGateway(t, e.Endpoint())
	g.waitReady(200, 10*time.Second)
	var cs []*client
	for range 5 {
		c := startClient(t, g.URL(), "")
		waitConnected(t, c, 5*time.Second)
		cs = append(cs, c)
	}
	var lat []time.Duration
	for i := range 30 {
		v := strconv.Itoa(100 + i)
		start := time.Now()
		put(t, cli, flags.AcTokenTtlSeconds, v)
		var worst time.Duration
		for _, c := range cs {
			worst = max(worst, c.waitValue(t, flags.AcTokenTtlSeconds, v, 5*time.Second).Sub(start))
		}
		lat = append(lat, worst)
	}
	t.Logf("etcd write → visible in all 5 clients, 30 writes: p50 %s, p99 %s, max %s",
		percentile(lat, .5), percentile(lat, .99), percentile(lat, 1))
	if p := percentile(lat, .5); p > 100*time.Millisecond {
		t.Fatalf("median propagation %s, over the ADR's 100 ms", p)
	}
	for _, c := range cs {
		if c.Int(flags.AcTokenTtlSeconds) != 129 {
			t.Fatalf("a client holds %d, want 129", c.Int(flags.AcTokenTtlSeconds))
		}
		c.checkMonotonic(t)
	}
	if n := g.Metric("flaggw_subscribers"); n != 5 {
		t.Fatalf("flaggw_subscribers %v, want 5", n)
	}
	if g.Metric("flaggw_pushes_total") < 150 || g.Metric("flaggw_etcd_up") != 1 {
		t.Fatalf("flaggw_pushes_total %v (want ≥ 150), flaggw_etcd_up %v", g.Metric("flaggw_pushes_total"), g.Metric("flaggw_etcd_up"))
	}
	// An audit line per write, with the old and new value.
	if !strings.Contains(g.logs.String(), `"flag":"ac.token.ttl_seconds","old":"128","new":"129"`) {
		t.Fatalf("no audit line for the last write:\n%s", g.logs)
	}
}

// TestAResumingClientGetsEveryChangeAfterItsRevisionInOrder: a client away
// while a flag changes ten times gets the ten changes, in order, from the
// gateway's history, not just the last value.
func TestAResumingClientGetsEveryChangeAfterItsRevisionInOrder(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "100")
	g := startGateway(t, e.Endpoint())
	g.waitReady(200, 10*time.Second)
	cache := filepath.Join(t.TempDir(), "flags.json")
	c := startClient(t, g.URL(), cache)
	c.waitValue(t, flags.AcTokenTtlSeconds, "100", 5*time.Second)
	c.Stop()
	var want []string
	for i := 1; i <= 10; i++ {
		v := strconv.Itoa(100 + i)
		put(t, cli, flags.AcTokenTtlSeconds, v)
		want = append(want, v)
	}
	put(t, cli, flags.GcHttp3Enabled, "true")
	again := startClient(t, g.URL(), cache)
	if again.Int(flags.AcTokenTtlSeconds) != 100 {
		t.Fatalf("restarted client's cached value %d, want 100", again.Int(flags.AcTokenTtlSeconds))
	}
	again.waitValue(t, flags.GcHttp3Enabled, "true", 5*time.Second)
	if got := again.valuesOf(flags.AcTokenTtlSeconds); !slices.Equal(got, want) {
		t.Fatalf("resumed client applied %v, want every change in order %v", got, want)
	}
	again.checkMonotonic(t)
	if g.Metric("flaggw_replays_total") != 1 || g.Metric("flaggw_snapshots_total") != 1 {
		t.Fatalf("replays %v snapshots %v; want the first connection a snapshot, the second a replay",
			g.Metric("flaggw_replays_total"), g.Metric("flaggw_snapshots_total"))
	}
}

// TestAClientBeyondTheHistoryGetsASnapshot: when the changes after a
// client's revision are gone (compacted in etcd, out of the gateway's
// history), it gets the current state whole and nothing older.
func TestAClientBeyondTheHistoryGetsASnapshot(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "100")
	put(t, cli, flags.GcHttp3Enabled, "true")
	g := startGateway(t, e.Endpoint(), "FLAGS_HISTORY=3")
	g.waitReady(200, 10*time.Second)
	cache := filepath.Join(t.TempDir(), "flags.json")
	c := startClient(t, g.URL(), cache)
	c.waitValue(t, flags.GcHttp3Enabled, "true", 5*time.Second)
	seen := c.Revision()
	c.Stop()
	for i := 1; i <= 6; i++ {
		put(t, cli, flags.AcTokenTtlSeconds, strconv.Itoa(100+i))
	}
	// Deleted while the client was away: back to its default.
	if _, err := cli.Delete(context.Background(), prefix+flags.GcHttp3Enabled); err != nil {
		t.Fatal(err)
	}
	rev := put(t, cli, flags.McMhSelectionStrategy, "round-robin")
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	again := startClient(t, g.URL(), cache)
	again.waitValue(t, flags.McMhSelectionStrategy, "round-robin", 5*time.Second)
	if got := again.valuesOf(flags.AcTokenTtlSeconds); !slices.Equal(got, []string{"106"}) {
		t.Fatalf("from a snapshot the client applied %v, want only the current 106", got)
	}
	if again.Bool(flags.GcHttp3Enabled) {
		t.Fatal("a flag deleted while the client was away is still true")
	}
	if g.Metric("flaggw_snapshots_total") != 2 {
		t.Fatalf("flaggw_snapshots_total %v, want 2 (first connection, then revision %d beyond the history)", g.Metric("flaggw_snapshots_total"), seen)
	}
	again.checkMonotonic(t)
}

// TestEtcdDownClientsKeepValuesGatewayNotReadyThenCatchesUp: etcd stops;
// clients keep their values and their connection, the gateway turns not
// ready; etcd returns and is written at once, before the gateway's watch
// is back: the gateway resumes from its revision and the clients get every
// write.
func TestEtcdDownClientsKeepValuesGatewayNotReadyThenCatchesUp(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "300")
	g := startGateway(t, e.Endpoint())
	g.waitReady(200, 10*time.Second)
	c := startClient(t, g.URL(), filepath.Join(t.TempDir(), "flags.json"))
	c.waitValue(t, flags.AcTokenTtlSeconds, "300", 5*time.Second)

	// SIGKILL: a crash (a graceful stop waits up to ~10 s for the
	// gateway's watch stream to end).
	stopped := time.Now()
	e.Kill()
	notReady := g.waitReady(503, 10*time.Second)
	t.Logf("etcd stopped: gateway not ready after %s", notReady)
	if g.Metric("flaggw_etcd_up") != 0 {
		t.Fatal("flaggw_etcd_up still 1 with etcd stopped")
	}
	time.Sleep(2 * time.Second) // heartbeats go on; nothing must change
	if c.Int(flags.AcTokenTtlSeconds) != 300 || !c.Connected() {
		t.Fatalf("with etcd down the client holds %d (connected %v), want 300 and connected", c.Int(flags.AcTokenTtlSeconds), c.Connected())
	}

	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	put(t, cli, flags.AcTokenTtlSeconds, "301")
	put(t, cli, flags.McMhSelectionStrategy, "round-robin")
	put(t, cli, flags.AcTokenTtlSeconds, "302")
	seen := c.waitValue(t, flags.AcTokenTtlSeconds, "302", 15*time.Second)
	c.waitValue(t, flags.McMhSelectionStrategy, "round-robin", time.Second)
	g.waitReady(200, 15*time.Second)
	t.Logf("etcd down %s; after its restart: the 3 writes visible in the client %s after etcd served again, gateway ready again within %s",
		back.Sub(stopped).Round(time.Millisecond), seen.Sub(back).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	if got := c.valuesOf(flags.AcTokenTtlSeconds); !slices.Equal(got, []string{"300", "301", "302"}) {
		t.Fatalf("client applied %v, want 300 301 302 (no missed revision)", got)
	}
	c.checkMonotonic(t)
}

// TestGatewayCutOffFromEtcdCatchesUpOnMissedRevisions: the gateway loses
// etcd (a partition) while etcd stays up and is written; clients keep
// their values, the gateway is not ready; when the network is back its
// watch resumes from its revision and every missed change reaches the
// clients, in order.
func TestGatewayCutOffFromEtcdCatchesUpOnMissedRevisions(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "300")
	proxy := startProxy(t, "127.0.0.1:"+strconv.Itoa(e.ClientPort))
	// A history longer than the burst: a subscriber dropped as too slow
	// resumes from its revision (with the default 1024, one dropped early
	// in the 1100 writes would get a snapshot, and only the last value).
	g := startGateway(t, "http://"+proxy.addr, "FLAGS_HISTORY=4096")
	g.waitReady(200, 10*time.Second)
	c := startClient(t, g.URL(), filepath.Join(t.TempDir(), "flags.json"))
	c.waitValue(t, flags.AcTokenTtlSeconds, "300", 5*time.Second)

	cut := time.Now()
	proxy.Cut()
	t.Logf("gateway cut off from etcd: not ready after %s", g.waitReady(503, 10*time.Second))
	put(t, cli, flags.AcTokenTtlSeconds, "301")
	put(t, cli, flags.GcHttp3Enabled, "true")
	put(t, cli, flags.AcTokenTtlSeconds, "302")
	// More than etcd sends in one catching-up watch response (1000
	// revisions), and more than a subscriber's queue (256 frames).
	var ratios []string
	for i := 1; i <= 1100; i++ {
		v := strconv.FormatFloat(float64(i)/10000, 'g', -1, 64)
		put(t, cli, flags.MhAdmissionHardLimitRatio, v)
		ratios = append(ratios, v)
	}
	if c.Int(flags.AcTokenTtlSeconds) != 300 || c.Bool(flags.GcHttp3Enabled) || !c.Connected() {
		t.Fatalf("during the cut the client holds %d/%v (connected %v), want 300/false, connected", c.Int(flags.AcTokenTtlSeconds),
			c.Bool(flags.GcHttp3Enabled), c.Connected())
	}
	restored := time.Now()
	proxy.Restore()
	seen := c.waitValue(t, flags.AcTokenTtlSeconds, "302", 15*time.Second)
	c.waitValue(t, flags.GcHttp3Enabled, "true", time.Second)
	g.waitReady(200, 15*time.Second)
	t.Logf("cut for %s; after the network was back: missed writes in the client after %s, gateway ready within %s",
		restored.Sub(cut).Round(time.Millisecond), seen.Sub(restored).Round(time.Millisecond), time.Since(restored).Round(time.Millisecond))
	if got := c.valuesOf(flags.AcTokenTtlSeconds); !slices.Equal(got, []string{"300", "301", "302"}) {
		t.Fatalf("client applied %v, want 300 301 302 (every missed revision, in order)", got)
	}
	c.waitValue(t, flags.MhAdmissionHardLimitRatio, ratios[len(ratios)-1], 15*time.Second)
	if got := c.valuesOf(flags.MhAdmissionHardLimitRatio); !slices.Equal(got, ratios) {
		t.Fatalf("client applied %d of the 1100 missed ratio writes (first %v), want all in order", len(got), got[:min(5, len(got))])
	}
	t.Logf("all 1100 missed ratio writes applied in order %s after the network was back (subscribers dropped as too slow and resumed: %v)",
		time.Since(restored).Round(time.Millisecond), g.Metric("flaggw_subscribers_dropped_total"))
	c.checkMonotonic(t)
}

// TestGatewayWatchCompactedWhileCutOffResyncs: etcd compacts past the
// gateway's revision while it is cut off; its resumed watch is refused,
// so it re-reads the prefix and pushes the difference (a deletion
// included) to its subscribers, which stay connected.
func TestGatewayWatchCompactedWhileCutOffResyncs(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "300")
	put(t, cli, flags.GcHttp3Enabled, "true")
	proxy := startProxy(t, "127.0.0.1:"+strconv.Itoa(e.ClientPort))
	g := startGateway(t, "http://"+proxy.addr)
	g.waitReady(200, 10*time.Second)
	c := startClient(t, g.URL(), "")
	c.waitValue(t, flags.GcHttp3Enabled, "true", 5*time.Second)

	proxy.Cut()
	g.waitReady(503, 10*time.Second)
	put(t, cli, flags.AcTokenTtlSeconds, "301")
	put(t, cli, flags.AcTokenTtlSeconds, "302")
	if _, err := cli.Delete(context.Background(), prefix+flags.GcHttp3Enabled); err != nil {
		t.Fatal(err)
	}
	rev := put(t, cli, flags.McMhSelectionStrategy, "round-robin")
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	proxy.Restore()
	c.waitValue(t, flags.McMhSelectionStrategy, "round-robin", 15*time.Second)
	c.waitValue(t, flags.AcTokenTtlSeconds, "302", time.Second)
	c.waitValue(t, flags.GcHttp3Enabled, "false", time.Second) // deleted: the default
	t.Logf("compacted while cut off: the client held the re-read state %s after the network was back",
		time.Since(restored).Round(time.Millisecond))
	if g.Metric("flaggw_watch_restarts_total") < 1 {
		t.Fatal("flaggw_watch_restarts_total is 0: the gateway did not re-read the prefix")
	}
	if got := c.valuesOf(flags.AcTokenTtlSeconds); !slices.Equal(got, []string{"300", "302"}) {
		t.Fatalf("client applied %v, want 300 then 302 (the compacted 301 is gone)", got)
	}
	c.checkMonotonic(t)
}

// TestGatewayKilledClientsReconnectWithoutAStaleFlip: the gateway is
// SIGKILLed; clients keep their values, reconnect with backoff when it is
// back, get what changed meanwhile, and never go back to an older value.
// A graceful stop (SIGTERM) closes subscribers with "going away" and exits 0.
func TestGatewayKilledClientsReconnectWithoutAStaleFlip(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.MhAdmissionHardLimitRatio, "0.75")
	g := startGateway(t, e.Endpoint())
	g.waitReady(200, 10*time.Second)
	var cs []*client
	for range 3 {
		c := startClient(t, g.URL(), filepath.Join(t.TempDir(), "flags.json"))
		c.waitValue(t, flags.MhAdmissionHardLimitRatio, "0.75", 5*time.Second)
		cs = append(cs, c)
	}
	killed := time.Now()
	g.Kill()
	for _, c := range cs {
		start := time.Now()
		for c.Connected() {
			if time.Since(start) > 5*time.Second {
				t.Fatal("client still connected 5 s after the gateway was killed")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("gateway killed: clients saw the connection drop within %s", time.Since(killed).Round(time.Millisecond))
	put(t, cli, flags.MhAdmissionHardLimitRatio, "0.6")
	time.Sleep(300 * time.Millisecond)
	for _, c := range cs {
		if c.Float(flags.MhAdmissionHardLimitRatio) != 0.75 {
			t.Fatal("value changed with no gateway")
		}
	}
	restarted := time.Now()
	g.Start()
	for _, c := range cs {
		c.waitValue(t, flags.MhAdmissionHardLimitRatio, "0.6", 10*time.Second)
	}
	t.Logf("gateway restarted: all 3 clients reconnected and held the write made while it was down %s after the restart",
		time.Since(restarted).Round(time.Millisecond))
	for _, c := range cs {
		c.checkMonotonic(t)
		if got := c.valuesOf(flags.MhAdmissionHardLimitRatio); !slices.Equal(got, []string{"0.75", "0.6"}) {
			t.Fatalf("client applied %v, want 0.75 then 0.6", got)
		}
	}

	if err := g.Term(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if !strings.Contains(g.logs.String(), "stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", g.logs)
	}
	time.Sleep(200 * time.Millisecond)
	if !strings.Contains(cs[0].logs.String(), "gateway shutting down") {
		t.Fatalf("the client was not told the gateway is going away:\n%s", cs[0].logs)
	}
}

// TestColdStartWithNothingThenLiveValues: a client starting with neither a
// gateway nor etcd nor a cache serves the static defaults; when both
// appear it takes the live values.
func TestColdStartWithNothingThenLiveValues(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.McMhSelectionStrategy, "round-robin")
	put(t, cli, flags.PlatformCanaryAutoPromote, "false")
	e.Stop()
	g := startGateway(t, e.Endpoint())
	g.Kill() // its ports are known; nothing listens there now
	c := startClient(t, g.URL(), filepath.Join(t.TempDir(), "flags.json"))
	time.Sleep(500 * time.Millisecond)
	if c.String(flags.McMhSelectionStrategy) != "rendezvous" || !c.Bool(flags.PlatformCanaryAutoPromote) || c.Connected() {
		t.Fatalf("cold start with nothing: %q %v connected %v; want the static defaults", c.String(flags.McMhSelectionStrategy),
			c.Bool(flags.PlatformCanaryAutoPromote), c.Connected())
	}
	start := time.Now()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	g.Start()
	c.waitValue(t, flags.McMhSelectionStrategy, "round-robin", 15*time.Second)
	c.waitValue(t, flags.PlatformCanaryAutoPromote, "false", time.Second)
	t.Logf("etcd and gateway started: live values in the client after %s", time.Since(start).Round(time.Millisecond))
	if _, src, _ := c.Lookup(flags.McMhSelectionStrategy); src != flags.FromLive {
		t.Fatalf("source %s, want live", src)
	}
}

// TestAMalformedValueWrittenToEtcdIsRejected: a value written by hand that
// is not of the flag's type or not allowed is rejected by every client,
// which keeps the previous value; the next good value applies.
func TestAMalformedValueWrittenToEtcdIsRejected(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "300")
	put(t, cli, flags.McMhSelectionStrategy, "round-robin")
	g := startGateway(t, e.Endpoint())
	g.waitReady(200, 10*time.Second)
	cs := []*client{startClient(t, g.URL(), ""), startClient(t, g.URL(), "")}
	for _, c := range cs {
		c.waitValue(t, flags.McMhSelectionStrategy, "round-robin", 5*time.Second)
	}
	put(t, cli, flags.AcTokenTtlSeconds, "ten minutes")
	put(t, cli, flags.AcTokenTtlSeconds, "5000")
	put(t, cli, flags.McMhSelectionStrategy, "fastest")
	put(t, cli, flags.GcHttp3Enabled, "true") // a good write after the bad ones
	for _, c := range cs {
		c.waitValue(t, flags.GcHttp3Enabled, "true", 5*time.Second)
		if c.Int(flags.AcTokenTtlSeconds) != 300 || c.String(flags.McMhSelectionStrategy) != "round-robin" {
			t.Fatalf("malformed values applied: %d %q", c.Int(flags.AcTokenTtlSeconds), c.String(flags.McMhSelectionStrategy))
		}
		if n := strings.Count(c.logs.String(), "flag value rejected; previous value kept"); n != 3 {
			t.Fatalf("%d rejections logged, want 3:\n%s", n, c.logs)
		}
	}
	put(t, cli, flags.AcTokenTtlSeconds, "900")
	for _, c := range cs {
		c.waitValue(t, flags.AcTokenTtlSeconds, "900", 5*time.Second)
	}
	// A key below the prefix's level (another environment's) is not a flag
	// of this gateway's: nothing is pushed for it.
	changes := g.Metric("flaggw_changes_total")
	put(t, cli, "prod/"+flags.AcTokenTtlSeconds, "120")
	time.Sleep(300 * time.Millisecond)
	if g.Metric("flaggw_changes_total") != changes || cs[0].Int(flags.AcTokenTtlSeconds) != 900 {
		t.Fatal("a nested key was pushed as a flag")
	}
}

// TestConfigurationErrorsNameTheVariable: the binary refuses to start
// without etcd endpoints or with a bad prefix, exit code 2.
func TestConfigurationErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", "FLAGS_ETCD_ENDPOINTS is required"},
		{"FLAGS_ETCD_ENDPOINTS=http://127.0.0.1:1 FLAGS_PREFIX=flags", "FLAGS_PREFIX is malformed"},
	} {
		out, code := runGatewayOnce(t, append([]string{"DEV_SELF_SIGNED_TLS=true"}, strings.Fields(tc.env)...))
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Fatalf("env %q: exit %d, output %q; want 2 and %q", tc.env, code, out, tc.want)
		}
	}
}

// TestSubscribersNeedAnACTokenForTheGateway: without a token, with a
// token for another audience or signed by another key, the gateway
// answers 401; with a valid token whose subject is not in
// FLAGS_SUBSCRIBERS, 403. Each refusal is a log line on both sides and
// the client keeps its values; a valid subscriber gets the live values.
func TestSubscribersNeedAnACTokenForTheGateway(t *testing.T) {
	e := startEtcd(t)
	cli := etcdClient(t, e)
	put(t, cli, flags.AcTokenTtlSeconds, "300")
	g := startGateway(t, e.Endpoint(), "FLAGS_SUBSCRIBERS=meeting-controller,media-handler")
	g.waitReady(200, 15*time.Second)

	// The handshake's status, as the WebSocket dial sees it.
	dial := func(header http.Header) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, resp, err := websocket.Dial(ctx, g.URL(), &websocket.DialOptions{HTTPClient: flags.HTTPClient(tlsConfig(t)), HTTPHeader: header})
		if err == nil {
			conn.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return resp.StatusCode
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": []string{"Bearer " + tok}} }
	issue := func(s authn.Signer, sub, aud string) string {
		tok, _, err := s.Issue(sub, aud, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	forger := ac
	forger.Key = stranger // same kid, another key: a forged signature
	for name, c := range map[string]struct {
		header http.Header
		want   int
	}{
		"no token":           {nil, 401},
		"basic credentials":  {http.Header{"Authorization": []string{"Basic Zm9vOmJhcg=="}}, 401},
		"another audience":   {bearer(issue(ac, "meeting-controller", "global-controller")), 401},
		"forged signature":   {bearer(issue(forger, "meeting-controller", "flag-gateway")), 401},
		"subject not listed": {bearer(issue(ac, "e2e-tester", "flag-gateway")), 403},
		"valid":              {bearer(issue(ac, "media-handler", "flag-gateway")), 101},
	} {
		if got := dial(c.header); got != c.want {
			t.Errorf("%s: handshake answered %d, want %d", name, got, c.want)
		}
	}
	// The gateway's log comes through a pipe: a line may land just after
	// the handshake's answer.
	refusalsLogged := func(logs string) bool {
		return strings.Count(logs, "flag subscription refused: no valid AC token") >= 4 && strings.Contains(logs, "flag subscription refused: subject not in FLAGS_SUBSCRIBERS") &&
			strings.Contains(logs, `"subject":"e2e-tester"`)
	}
	for deadline := time.Now().Add(5 * time.Second); !refusalsLogged(g.logs.String()) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if logs := g.logs.String(); !refusalsLogged(logs) {
		t.Errorf("the refusals are not logged as such:\n%s", logs)
	}
	if g.Metric(`flaggw_subscriptions_refused_total{code="401"}`) < 4 || g.Metric(`flaggw_subscriptions_refused_total{code="403"}`) != 1 {
		t.Error("flaggw_subscriptions_refused_total does not count the refusals")
	}

	// The services' client: refused, it says so and keeps its defaults.
	anon := startClientWith(t, g.URL(), "", nil)
	outsider := startClientWith(t, g.URL(), "", tokenFor("e2e-tester", "flag-gateway"))
	member := startClient(t, g.URL(), "")
	member.waitValue(t, flags.AcTokenTtlSeconds, "300", 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	for name, c := range map[string]*client{"no token": anon, "subject not listed": outsider} {
		if c.Connected() || c.Int(flags.AcTokenTtlSeconds) != 600 {
			t.Errorf("%s: connected %v, ttl %d; want refused and the static default 600", name, c.Connected(), c.Int(flags.AcTokenTtlSeconds))
		}
	}
	if !strings.Contains(anon.logs.String(), "flag gateway subscription refused") || !strings.Contains(anon.logs.String(), "(401)") {
		t.Errorf("no-token client did not log the 401:\n%s", anon.logs)
	}
	if !strings.Contains(outsider.logs.String(), "(403)") || !strings.Contains(outsider.logs.String(), "FLAGS_SUBSCRIBERS") {
		t.Errorf("outsider client did not log the 403:\n%s", outsider.logs)
	}
}

// TestAuthenticationIsRequiredByDefault: without FLAGS_AC_JWKS_URL the
// gateway refuses to start (exit 2) unless told FLAGS_INSECURE_NO_AUTH.
func TestAuthenticationIsRequiredByDefault(t *testing.T) {
	out, code := runGatewayOnce(t, []string{"DEV_SELF_SIGNED_TLS=true", "FLAGS_ETCD_ENDPOINTS=http://127.0.0.1:1"})
	if code != 2 || !strings.Contains(out, "FLAGS_AC_JWKS_URL is required") {
		t.Fatalf("exit %d, output %q; want 2 and FLAGS_AC_JWKS_URL is required", code, out)
	}
}
