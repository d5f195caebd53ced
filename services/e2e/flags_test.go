package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/mh"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const flagPrefix = "/darktower/flags/e2e/"

// metric is the value of the series (name with its labels, exactly as
// exposed) on a service's /metrics; -1 when absent.
func (s *service) metric(t *testing.T, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(get(t, "http://"+s.opsAddr+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// TestFeatureFlagsEndToEnd runs the four services and the flag gateway as
// their binaries against a real etcd, PostgreSQL and Redis; each service
// subscribes with its AC token. A flag written to etcd changes each
// service's behaviour without a restart: AC's token lifetime, MC's
// placement strategy, MH's admission threshold, GC's liveness window.
// With the gateway down the services keep their last values (a restarted
// one from its cache file), stay ready, and catch up when it is back.
func TestFeatureFlagsEndToEnd(t *testing.T) {
	e := setup(t)
	e.root = t
	defer e.dumpLogs(t)
	etcd, err := testenv.StartEtcd()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(name, value string) int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Put(ctx, flagPrefix+name, value)
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	del := func(name string) int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Delete(ctx, flagPrefix+name)
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}

	acURL := "https://" + e.ac.apiAddr
	// One client for every call: a new one per call would leave its idle
	// connections open, beyond API_MAX_CONNS_PER_SOURCE.
	hc := e.httpsClient()
	cert, key, err := e.pki.Issue("flag-gateway")
	if err != nil {
		t.Fatal(err)
	}
	gw := &service{name: "flag-gateway", bin: filepath.Join(filepath.Dir(e.ac.bin), "flag-gateway"), opsAddr: freeAddr(t), apiAddr: freeAddr(t),
		logPath: filepath.Join(e.dir, "flag-gateway.log")}
	gw.env = []string{"OPS_ADDR=" + gw.opsAddr, "API_ADDR=" + gw.apiAddr,
		"TLS_CERT_FILE=" + cert, "TLS_KEY_FILE=" + key, "TLS_CA_FILE=" + e.caFile,
		"SHUTDOWN_DELAY=0s", "SHUTDOWN_GRACE=5s", "LOG_LEVEL=debug",
		"FLAGS_ETCD_ENDPOINTS=" + etcd.Endpoint(), "FLAGS_PREFIX=" + flagPrefix, "FLAGS_HEARTBEAT=1s",
		"FLAGS_AC_JWKS_URL=" + acURL + "/.well-known/jwks.json"}
	watchURL := "wss://" + gw.apiAddr + flags.WatchPath
	for _, s := range e.all() {
		s.env = append(s.env, "FLAGS_URL="+watchURL, "FLAGS_CACHE_FILE="+filepath.Join(e.dir, s.name+"-flags.json"))
	}
	e.gc.env = append(e.gc.env, "GC_AC_TOKEN_URL="+acURL+"/v1/oauth/token", "GC_CLIENT_SECRET="+e.gcSecret)
	defer func() {
		if t.Failed() {
			t.Logf("--- flag-gateway log ---\n%s", gw.logs())
		}
	}()

	for _, s := range append(e.all(), gw) {
		s.start(t)
	}
	waitFor(t, 60*time.Second, "the services and the gateway ready", func() bool {
		for _, s := range append(e.all(), gw) {
			if code, _ := s.ready(); code != 200 {
				return false
			}
		}
		return true
	})
	waitFor(t, 20*time.Second, "every service subscribed", func() bool {
		for _, s := range e.all() {
			if s.metric(t, "flags_connected") != 1 {
				return false
			}
		}
		return gw.metric(t, "flaggw_subscribers") == 4
	})
	for _, s := range e.all() {
		if code, body := s.ready(); code != 200 || !strings.Contains(body, `"flags":"healthy"`) {
			t.Errorf("%s /ready = %d %s, want ready with flags healthy", s.name, code, body)
		}
	}
	// applied waits until s holds etcd revision rev.
	applied := func(s *service, rev int64) {
		t.Helper()
		waitFor(t, 10*time.Second, s.name+" at flags revision "+strconv.FormatInt(rev, 10), func() bool {
			return s.metric(t, "flags_revision") >= float64(rev)
		})
	}

	t.Run("subscribers are authenticated", func(t *testing.T) {
		dial := func(token string) int {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			h := http.Header{}
			if token != "" {
				h.Set("Authorization", "Bearer "+token)
			}
			conn, resp, err := websocket.Dial(ctx, watchURL, &websocket.DialOptions{HTTPClient: flags.HTTPClient(&tls.Config{RootCAs: e.ca}), HTTPHeader: h})
			if err == nil {
				conn.CloseNow()
				return 101
			}
			if resp == nil {
				t.Fatal(err)
			}
			return resp.StatusCode
		}
		if code := dial(""); code != 401 {
			t.Errorf("no token: %d, want 401", code)
		}
		if code := dial(e.token(t, "meeting-controller")); code != 401 {
			t.Errorf("a token for another audience: %d, want 401", code)
		}
		if code := dial(e.token(t, "flag-gateway")); code != 403 {
			t.Errorf("e2e-tester (not in FLAGS_SUBSCRIBERS): %d, want 403", code)
		}
		if !strings.Contains(gw.logs(), `"msg":"flag subscription refused: subject not in FLAGS_SUBSCRIBERS"`) {
			t.Error("the 403 is not logged")
		}
	})

	tokenTTL := func() time.Duration {
		t.Helper()
		req, _ := http.NewRequest("POST", acURL+"/v1/oauth/token", strings.NewReader("grant_type=client_credentials&audience=global-controller"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("e2e-tester", "tester-secret-e2e-value")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			ExpiresIn int `json:"expires_in"`
		}
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
			t.Fatalf("token: %d", resp.StatusCode)
		}
		return time.Duration(body.ExpiresIn) * time.Second
	}
	t.Run("ac-service: ac.token.ttl_seconds", func(t *testing.T) {
		if d := tokenTTL(); d < 590*time.Second || d > 600*time.Second {
			t.Fatalf("token lifetime before any flag = %s, want AC_TOKEN_TTL 10m", d)
		}
		applied(e.ac, put(flags.AcTokenTtlSeconds, "120"))
		if d := tokenTTL(); d < 110*time.Second || d > 120*time.Second {
			t.Fatalf("token lifetime after ac.token.ttl_seconds=120 = %s", d)
		}
	})

	// A second media handler (a registration by e2e-tester, who owns
	// e2e-*), more loaded than mh-e2e, kept alive by heartbeats.
	ctx, stopBeats := context.WithCancel(context.Background())
	var beats sync.WaitGroup
	defer func() { stopBeats(); beats.Wait() }()
	mcToken := e.token(t, "meeting-controller")
	beats.Go(func() {
		for ctx.Err() == nil {
			testenv.CallJSON(t, hc, "POST", "https://"+e.mc.apiAddr+"/v1/media-handlers", mcToken,
				wire.MHRegistration{ID: "e2e-mh2", MediaAddr: "127.0.0.1:9", Endpoint: "https://e2e-mh2", Utilization: 0.5, Admitting: true})
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	ticket := func(session, participant string) wire.MediaTicket {
		t.Helper()
		code, body, _ := testenv.CallJSON(t, hc, "POST", "https://"+e.mc.apiAddr+"/v1/media-tickets", mcToken,
			wire.MediaTicketRequest{SessionID: session, ParticipantID: participant})
		var mt wire.MediaTicket
		if code != 200 || json.Unmarshal(body, &mt) != nil {
			t.Fatalf("ticket %s/%s = %d %s", session, participant, code, body)
		}
		return mt
	}
	waitFor(t, 10*time.Second, "MC lists both media handlers", func() bool {
		code, body, _ := testenv.CallJSON(t, hc, "GET", "https://"+e.mc.apiAddr+"/v1/media-handlers", mcToken, nil)
		return code == 200 && strings.Contains(string(body), `"e2e-mh2"`) && strings.Contains(string(body), `"mh-e2e"`)
	})
	t.Run("meeting-controller: mc.mh_selection.strategy", func(t *testing.T) {
		applied(e.mc, put(flags.McMhSelectionStrategy, "round-robin"))
		seen := map[string]int{}
		var last string
		for i := range 6 {
			mt := ticket("rr-"+strconv.Itoa(i), "alice")
			if mt.MediaHandler == last {
				t.Fatalf("round-robin placed two sessions in a row on %s", last)
			}
			last = mt.MediaHandler
			seen[mt.MediaHandler]++
		}
		if seen["mh-e2e"] != 3 || seen["e2e-mh2"] != 3 {
			t.Fatalf("round-robin placements %v, want 3 each", seen)
		}
		applied(e.mc, put(flags.McMhSelectionStrategy, "least-loaded"))
		for range 6 { // random ids: rendezvous hashing would spread them over both
			if mt := ticket(rand.Text()[:16], "alice"); mt.MediaHandler != "mh-e2e" {
				t.Fatalf("least-loaded placed a session on %s, want mh-e2e (utilisation ~0 against 0.5)", mt.MediaHandler)
			}
		}
	})

	mhLoad := func() mh.Load {
		t.Helper()
		resp, err := hc.Get("https://" + e.mh.apiAddr + "/v1/load")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var load mh.Load
		_ = json.NewDecoder(resp.Body).Decode(&load)
		return load
	}
	// joined reports whether a participant holding mt gets MH's welcome.
	joined := func(mt wire.MediaTicket) bool {
		t.Helper()
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		to, _ := net.ResolveUDPAddr("udp", e.mediaAddr)
		raw, _ := base64.RawURLEncoding.DecodeString(mt.Ticket)
		buf := make([]byte, 64)
		_, _ = c.WriteToUDP(mh.EncodeJoin(raw, nil), to)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFromUDP(buf)
		cookie, ok := mh.ParseChallenge(buf[:max(n, 0)])
		if err != nil || !ok {
			t.Fatalf("no challenge: %v", err)
		}
		_, _ = c.WriteToUDP(mh.EncodeJoin(raw, cookie), to)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err = c.ReadFromUDP(buf)
		return err == nil && mh.IsWelcome(buf[:n])
	}
	t.Run("media-handler: mh.admission.hard_limit_ratio and mh.bandwidth.warning_ratio", func(t *testing.T) {
		if load := mhLoad(); load.State != "normal" || !load.Admitting {
			t.Fatalf("MH load before any flag: %+v", load)
		}
		applied(e.mh, put(flags.MhBandwidthWarningRatio, "0"))
		if load := mhLoad(); load.State != "warning" || !load.Admitting {
			t.Fatalf("MH load with warning ratio 0: %+v, want warning and admitting", load)
		}
		if v := e.mh.metric(t, "mh_bandwidth_state"); v != 1 {
			t.Fatalf("mh_bandwidth_state = %g, want 1 (warning)", v)
		}
		if !joined(ticket("mh-before", "alice")) {
			t.Fatal("a join at the default hard limit was refused")
		}
		before := ticket("mh-after", "alice") // least-loaded: on mh-e2e
		if before.MediaHandler != "mh-e2e" {
			t.Fatalf("ticket on %s", before.MediaHandler)
		}
		rejected := e.mh.metric(t, `mh_datagrams_total{result="rejected_capacity"}`)
		applied(e.mh, put(flags.MhAdmissionHardLimitRatio, "0"))
		if load := mhLoad(); load.State != "critical" || load.Admitting {
			t.Fatalf("MH load with hard limit 0: %+v, want critical and not admitting", load)
		}
		if joined(before) {
			t.Fatal("MH admitted a new participant with mh.admission.hard_limit_ratio 0")
		}
		if v := e.mh.metric(t, `mh_datagrams_total{result="rejected_capacity"}`); v != rejected+1 {
			t.Fatalf("rejected_capacity %g → %g, want one more", rejected, v)
		}
		// MC hears it at MH's next heartbeat: new sessions go elsewhere.
		waitFor(t, 5*time.Second, "MC placing new sessions off mh-e2e", func() bool {
			return ticket("mh-off-"+strconv.FormatInt(time.Now().UnixNano(), 36), "alice").MediaHandler == "e2e-mh2"
		})
	})

	t.Run("global-controller: gc.registry.mc_ttl_seconds", func(t *testing.T) {
		gcToken := e.token(t, "global-controller")
		listed := func() bool {
			code, body, _ := testenv.CallJSON(t, hc, "GET", "https://"+e.gc.apiAddr+"/v1/meeting-controllers", gcToken, nil)
			if code != 200 {
				t.Fatalf("GC list = %d %s", code, body)
			}
			return strings.Contains(string(body), `"e2e-mc2"`)
		}
		code, body, _ := testenv.CallJSON(t, hc, "POST", "https://"+e.gc.apiAddr+"/v1/meeting-controllers", gcToken,
			wire.MCRegistration{ID: "e2e-mc2", Endpoint: "https://e2e-mc2", Region: "local"})
		if code != 200 {
			t.Fatalf("register e2e-mc2 = %d %s", code, body)
		}
		registered := time.Now()
		applied(e.gc, put(flags.GcRegistryMcTtlSeconds, "5"))
		waitFor(t, 8*time.Second, "GC dropping e2e-mc2 (silent > 5 s)", func() bool { return !listed() })
		if silent := time.Since(registered); silent > 7*time.Second {
			t.Fatalf("dropped after %s of silence, want about 5 s", silent)
		}
		applied(e.gc, del(flags.GcRegistryMcTtlSeconds))
		if !listed() {
			t.Fatal("the flag deleted, GC_MC_TTL (30 s) is back: e2e-mc2 must be listed again")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("gateway down: last values kept, ready, caught up after", func(t *testing.T) {
		_ = gw.cmd.Process.Kill()
		<-gw.exited
		waitFor(t, 5*time.Second, "every service sees the gateway gone", func() bool {
			for _, s := range e.all() {
				if s.metric(t, "flags_connected") != 0 {
					return false
				}
			}
			return true
		})
		for _, s := range e.all() {
			if code, body := s.ready(); code != 200 || !strings.Contains(body, `"flags":"unhealthy"`) {
				t.Errorf("%s /ready = %d %s, want ready with flags unhealthy", s.name, code, body)
			}
		}
		if d := tokenTTL(); d > 120*time.Second {
			t.Errorf("AC's token lifetime with the gateway down = %s, want the last value 120 s", d)
		}
		if mt := ticket("down-1", "alice"); mt.MediaHandler != "e2e-mh2" {
			t.Errorf("MC placed on %s with the gateway down, want e2e-mh2 (least-loaded; mh-e2e not admitting)", mt.MediaHandler)
		}
		if load := mhLoad(); load.Admitting {
			t.Errorf("MH admitting with the gateway down: %+v, want the last hard limit 0 kept", load)
		}
		// A restart with the gateway down: the cache file's values.
		if err := e.ac.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-e.ac.exited
		e.ac.start(e.root)
		waitFor(t, 30*time.Second, "AC ready again", func() bool { code, _ := e.ac.ready(); return code == 200 })
		if d := tokenTTL(); d > 120*time.Second {
			t.Errorf("AC restarted with the gateway down issues %s tokens, want 120 s from its cache", d)
		}
		if !strings.Contains(e.ac.logs(), `"msg":"flags loaded from cache"`) {
			t.Error("AC did not log loading its flag cache")
		}
		// Written while the gateway is down, in force once it is back.
		rev := put(flags.AcTokenTtlSeconds, "300")
		put(flags.MhAdmissionHardLimitRatio, "0.8")
		gw.start(e.root)
		for _, s := range e.all() {
			applied(s, rev)
		}
		if d := tokenTTL(); d < 290*time.Second || d > 300*time.Second {
			t.Errorf("token lifetime after the gateway came back = %s, want 300 s", d)
		}
		waitFor(t, 5*time.Second, "MH admitting again", func() bool { return mhLoad().Admitting })
	})

	// Without a cache and without a gateway: the compiled defaults.
	t.Run("no gateway, no cache: static defaults", func(t *testing.T) {
		_ = gw.cmd.Process.Kill()
		<-gw.exited
		if err := e.ac.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-e.ac.exited
		if err := os.Remove(filepath.Join(e.dir, "ac-service-flags.json")); err != nil {
			t.Fatal(err)
		}
		e.ac.start(e.root)
		waitFor(t, 30*time.Second, "AC ready again", func() bool { code, _ := e.ac.ready(); return code == 200 })
		if d := tokenTTL(); d < 590*time.Second {
			t.Errorf("AC with neither gateway nor cache issues %s tokens, want AC_TOKEN_TTL 10m", d)
		}
	})
	t.Run("no secrets in logs", func(t *testing.T) { e.noSecretsInLogs(t) })
}
