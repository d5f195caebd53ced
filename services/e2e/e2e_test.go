// Package e2e starts the four service binaries as processes against real
// PostgreSQL and Redis, with certificates from a test CA, and checks the
// operational contract of ADR-0012 from the outside.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/ac"
	"github.com/darktower/delivery/services/internal/mh"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The ADR's readiness probe: periodSeconds 5.
const probePeriod = 5 * time.Second

// Heartbeats are fast here so the test is short; readiness windows scale
// with them (3 intervals).
const heartbeat = 500 * time.Millisecond

type service struct {
	name     string
	bin      string
	env      []string
	opsAddr  string
	apiAddr  string
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	exitCode int
}

func (s *service) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		s.exitCode = s.cmd.ProcessState.ExitCode()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

func (s *service) logs() string { b, _ := os.ReadFile(s.logPath); return string(b) }

func (s *service) running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// ready GETs /ready as the kubelet would (3 s timeout).
func (s *service) ready() (int, string) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + s.opsAddr + "/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type env struct {
	root           *testing.T // owns the processes: subtests must not stop them
	dir            string
	pg             *testenv.Postgres
	redis          *testenv.Redis
	ca             *x509.CertPool
	caFile         string
	pki            *testenv.PKI
	gcSecret       string // GC's client secret: it subscribes to the flag gateway (flags_test.go)
	ac, gc, mc, mh *service
	mediaAddr      string
	secrets        []string
}

func buildBinaries(t *testing.T, dir string) {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the services: %v\n%s", err, out)
	}
}

func freeAddr(t *testing.T) string {
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

func freeUDPAddr(t *testing.T) string {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func setup(t *testing.T) *env {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	buildBinaries(t, bin)
	e := &env{dir: dir}
	var err error
	if e.pg, err = testenv.StartPostgres(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pg.Stop)
	if e.redis, err = testenv.StartRedis(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.redis.Stop)
	acDB, err := e.pg.CreateDatabase("ac")
	if err != nil {
		t.Fatal(err)
	}
	gcDB, err := e.pg.CreateDatabase("gc")
	if err != nil {
		t.Fatal(err)
	}
	pki, err := testenv.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.caFile, e.pki = pki.CAFile, pki
	caPEM, _ := os.ReadFile(pki.CAFile)
	e.ca = x509.NewCertPool()
	e.ca.AppendCertsFromPEM(caPEM)

	masterKey := base64.StdEncoding.EncodeToString([]byte("e2e-master-key-32-bytes-exactly!"))
	mcSecret, mhSecret, testerSecret := "mc-secret-e2e-value", "mh-secret-e2e-value", "tester-secret-e2e-value"
	e.gcSecret = "gc-secret-e2e-value"
	e.secrets = []string{e.pg.Password, masterKey, mcSecret, mhSecret, testerSecret, e.gcSecret}
	clientsFile := filepath.Join(dir, "clients.json")
	// flag-gateway: the services subscribe to flags with AC tokens for it
	// (flags_test.go; unused where no FLAGS_URL is set).
	writeClients(t, clientsFile, map[string][3]string{
		"meeting-controller": {mcSecret, "global-controller flag-gateway", "mc-e2e"},
		"media-handler":      {mhSecret, "meeting-controller flag-gateway", "mh-*"},
		"global-controller":  {e.gcSecret, "flag-gateway", ""},
		"e2e-tester":         {testerSecret, "global-controller meeting-controller flag-gateway", "e2e-*"},
	})

	newService := func(name string, extra ...string) *service {
		cert, key, err := pki.Issue(name)
		if err != nil {
			t.Fatal(err)
		}
		s := &service{name: name, bin: filepath.Join(bin, name), opsAddr: freeAddr(t), apiAddr: freeAddr(t),
			logPath: filepath.Join(dir, name+".log")}
		s.env = append([]string{
			"OPS_ADDR=" + s.opsAddr, "API_ADDR=" + s.apiAddr,
			"TLS_CERT_FILE=" + cert, "TLS_KEY_FILE=" + key, "TLS_CA_FILE=" + pki.CAFile,
			"SHUTDOWN_DELAY=200ms", "SHUTDOWN_GRACE=5s", "LOG_LEVEL=debug",
		}, extra...)
		return s
	}
	e.ac = newService("ac-service",
		"AC_DATABASE_URL="+acDB, "AC_MASTER_KEY="+masterKey, "AC_CLIENTS_FILE="+clientsFile,
		// Every client here comes from 127.0.0.1: one source for the limits.
		"AC_TOKEN_RATE_PER_SOURCE=50", "AC_AUTH_CONCURRENCY_PER_SOURCE=4", "AC_AUTH_CONCURRENCY=4")
	acURL := "https://" + e.ac.apiAddr
	e.gc = newService("global-controller",
		"GC_DATABASE_URL="+gcDB, "GC_AC_JWKS_URL="+acURL+"/.well-known/jwks.json")
	e.mc = newService("meeting-controller",
		"MC_ID=mc-e2e", "MC_REDIS_ADDR="+e.redis.Addr(), "MC_CLIENT_SECRET="+mcSecret,
		"MC_GC_URL=https://"+e.gc.apiAddr, "MC_AC_TOKEN_URL="+acURL+"/v1/oauth/token",
		"MC_AC_JWKS_URL="+acURL+"/.well-known/jwks.json", "MC_HEARTBEAT_INTERVAL="+heartbeat.String(),
		"MC_TICKET_CLIENTS=e2e-tester")
	e.mc.env = append(e.mc.env, "MC_ADVERTISE_URL=https://"+e.mc.apiAddr)
	e.mediaAddr = freeUDPAddr(t)
	e.mh = newService("media-handler",
		"MH_ID=mh-e2e", "MH_MEDIA_ADDR="+e.mediaAddr, "MH_CLIENT_SECRET="+mhSecret,
		"MH_MC_URL=https://"+e.mc.apiAddr, "MH_AC_TOKEN_URL="+acURL+"/v1/oauth/token",
		"MH_HEARTBEAT_INTERVAL="+heartbeat.String())
	e.mh.env = append(e.mh.env, "MH_ADVERTISE_URL=https://"+e.mh.apiAddr)
	return e
}

// writeClients: id → secret, audiences, instances (space-separated).
func writeClients(t *testing.T, path string, clients map[string][3]string) {
	var f ac.ClientsFile
	for id, c := range clients {
		h, err := bcrypt.GenerateFromPassword([]byte(c[0]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		f.Clients = append(f.Clients, ac.Client{ID: id, SecretBcrypt: string(h), Audiences: strings.Fields(c[1]), Instances: strings.Fields(c[2])})
	}
	b, _ := json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *env) all() []*service { return []*service{e.ac, e.gc, e.mc, e.mh} }

func (e *env) dumpLogs(t *testing.T) {
	if t.Failed() {
		for _, s := range e.all() {
			t.Logf("--- %s log ---\n%s", s.name, s.logs())
		}
	}
}

func TestServicesEndToEnd(t *testing.T) {
	e := setup(t)
	e.root = t
	defer e.dumpLogs(t)

	// Downstream services first: none may turn ready while AC is absent.
	for _, s := range []*service{e.mh, e.mc, e.gc} {
		s.start(t)
	}
	waitFor(t, 10*time.Second, "ops listeners", func() bool {
		for _, s := range []*service{e.mh, e.mc, e.gc} {
			if code, _ := s.ready(); code == 0 {
				return false
			}
		}
		return true
	})
	observeUntil := time.Now().Add(6 * heartbeat)
	for time.Now().Before(observeUntil) {
		for _, s := range []*service{e.mh, e.mc, e.gc} {
			if code, body := s.ready(); code != 503 {
				t.Fatalf("%s is %d (%s) while AC is not running", s.name, code, body)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("readiness chain", func(t *testing.T) { e.readinessChain(t) })
	if t.Failed() {
		return
	}
	t.Run("tokens", func(t *testing.T) { e.tokens(t) })
	t.Run("rotate-key command", func(t *testing.T) { e.rotateKey(t) })
	t.Run("media relay", func(t *testing.T) { e.mediaRelay(t) })
	t.Run("darktower-smoke command", func(t *testing.T) { e.smokeCommand(t) })
	t.Run("database freeze keeps live media", func(t *testing.T) { e.databaseFreeze(t) })
	t.Run("redis outage", func(t *testing.T) { e.redisOutage(t) })
	t.Run("SIGTERM drains and exits 0", func(t *testing.T) { e.sigterm(t) })
	t.Run("no secrets in logs", func(t *testing.T) { e.noSecretsInLogs(t) })
}

func (e *env) readinessChain(t *testing.T) {
	started := time.Now()
	e.ac.start(e.root)
	// Each round polls downstream first (MH, MC, GC, AC). A service can only
	// turn ready after its upstream did, and upstreams stay ready, so a
	// round that sees a service ready also sees its upstream ready.
	order := []*service{e.mh, e.mc, e.gc, e.ac}
	firstRound := map[string]int{}
	firstSeen := map[string]time.Duration{}
	deadline := time.Now().Add(60 * time.Second)
	for round := 0; len(firstRound) < 4; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("not all ready after 60 s; first ready: %v", firstSeen)
		}
		for _, s := range order {
			if _, seen := firstRound[s.name]; seen {
				continue
			}
			if code, _ := s.ready(); code == 200 {
				firstRound[s.name], firstSeen[s.name] = round, time.Since(started).Round(time.Millisecond)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	chain := []string{"ac-service", "global-controller", "meeting-controller", "media-handler"}
	for i := 1; i < len(chain); i++ {
		up, down := chain[i-1], chain[i]
		if firstRound[down] < firstRound[up] {
			t.Errorf("%s was ready (round %d) before %s (round %d)", down, firstRound[down], up, firstRound[up])
		}
	}
	t.Logf("FIGURE readiness chain after AC start: ac-service %s, global-controller %s, meeting-controller %s, media-handler %s",
		firstSeen["ac-service"], firstSeen["global-controller"], firstSeen["meeting-controller"], firstSeen["media-handler"])
	for _, s := range e.all() {
		if code, body := s.ready(); code != 200 || !strings.Contains(body, `"status":"ready"`) {
			t.Errorf("%s /ready = %d %s", s.name, code, body)
		}
	}
}

func (e *env) httpsClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.ca}, ForceAttemptHTTP2: true}}
}

func (e *env) token(t *testing.T, audience string) string {
	cc := clientcredentials.Config{ClientID: "e2e-tester", ClientSecret: "tester-secret-e2e-value",
		TokenURL: "https://" + e.ac.apiAddr + "/v1/oauth/token", EndpointParams: url.Values{"audience": {audience}},
		AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, e.httpsClient()))
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func (e *env) tokens(t *testing.T) {
	c := e.httpsClient()
	list := func(token string) (int, string, int) {
		code, body, proto := testenv.CallJSON(t, c, "GET", "https://"+e.gc.apiAddr+"/v1/meeting-controllers", token, nil)
		return code, string(body), proto
	}
	code, body, proto := list(e.token(t, "global-controller"))
	if code != 200 || !strings.Contains(body, `"mc-e2e"`) || proto != 2 {
		t.Fatalf("GC list with AC's token = %d over HTTP/%d: %s", code, proto, body)
	}
	for name, tok := range map[string]string{
		"no token":       "",
		"garbage":        "eyJhbGciOiJub25lIn0.e30.",
		"wrong audience": e.token(t, "meeting-controller"),
	} {
		if code, body, _ := list(tok); code != 401 || strings.Contains(body, "audience") {
			t.Errorf("%s: %d %s, want a bare 401", name, code, body)
		}
	}
	// Finding 4: another client with a valid token cannot overwrite
	// mc-e2e's endpoint at GC, nor mh-e2e's media address at MC.
	hijackGC := map[string]string{"id": "mc-e2e", "endpoint": "https://attacker.example", "region": "local"}
	if code, body, _ := testenv.CallJSON(t, c, "POST", "https://"+e.gc.apiAddr+"/v1/meeting-controllers", e.token(t, "global-controller"), hijackGC); code != 403 {
		t.Errorf("foreign registration of mc-e2e at GC = %d %s, want 403", code, body)
	}
	hijackMC := map[string]any{"id": "mh-e2e", "media_addr": "203.0.113.66:443", "endpoint": "https://attacker.example", "utilization": 0, "admitting": true}
	if code, body, _ := testenv.CallJSON(t, c, "POST", "https://"+e.mc.apiAddr+"/v1/media-handlers", e.token(t, "meeting-controller"), hijackMC); code != 403 {
		t.Errorf("foreign registration of mh-e2e at MC = %d %s, want 403", code, body)
	}
	// Nor withdraw them.
	if code, body, _ := testenv.CallJSON(t, c, "DELETE", "https://"+e.gc.apiAddr+"/v1/meeting-controllers/mc-e2e", e.token(t, "global-controller"), nil); code != 403 {
		t.Errorf("foreign deregistration of mc-e2e at GC = %d %s, want 403", code, body)
	}
	if code, body, _ := testenv.CallJSON(t, c, "DELETE", "https://"+e.mc.apiAddr+"/v1/media-handlers/mh-e2e", e.token(t, "meeting-controller"), nil); code != 403 {
		t.Errorf("foreign deregistration of mh-e2e at MC = %d %s, want 403", code, body)
	}
	if _, body, _ := list(e.token(t, "global-controller")); strings.Contains(body, "attacker.example") || !strings.Contains(body, `"mc-e2e"`) {
		t.Errorf("GC's registry after the attempt: %s", body)
	}
}

func (e *env) mediaRelay(t *testing.T) {
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	to, _ := net.ResolveUDPAddr("udp", e.mediaAddr)
	alice, bob, eve := listen(), listen(), listen()
	send := func(c *net.UDPConn, payload string) {
		d, _ := mh.EncodeDatagram("meeting-e2e", []byte(payload))
		if _, err := c.WriteToUDP(d, to); err != nil {
			t.Fatal(err)
		}
	}
	mcToken := e.token(t, "meeting-controller")
	ticket := func(participant string) []byte {
		code, body, _ := testenv.CallJSON(t, e.httpsClient(), "POST", "https://"+e.mc.apiAddr+"/v1/media-tickets", mcToken,
			wire.MediaTicketRequest{SessionID: "meeting-e2e", ParticipantID: participant})
		var mt wire.MediaTicket
		if code != 200 || json.Unmarshal(body, &mt) != nil || mt.MediaHandler != "mh-e2e" || mt.MediaAddr != e.mediaAddr {
			t.Fatalf("MC ticket = %d %s", code, body)
		}
		raw, err := base64.RawURLEncoding.DecodeString(mt.Ticket)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	buf := make([]byte, 1500)
	read := func(c *net.UDPConn, wait time.Duration) []byte {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	join := func(c *net.UDPConn, tk []byte) {
		if _, err := c.WriteToUDP(mh.EncodeJoin(tk, nil), to); err != nil {
			t.Fatal(err)
		}
		cookie, ok := mh.ParseChallenge(read(c, 2*time.Second))
		if !ok {
			t.Fatal("MH did not challenge a join with MC's ticket")
		}
		if _, err := c.WriteToUDP(mh.EncodeJoin(tk, cookie), to); err != nil {
			t.Fatal(err)
		}
		if !mh.IsWelcome(read(c, 2*time.Second)) {
			t.Fatal("MH did not welcome a join that echoed its cookie")
		}
	}
	// Eve, without a ticket, joins the old way (one media datagram) and
	// is neither forwarded nor answered.
	send(eve, "eve joins")
	join(bob, ticket("bob"))
	join(alice, ticket("alice"))
	send(eve, "eve injects")
	send(alice, "hello from alice")
	if got := read(bob, 2*time.Second); !bytes.HasSuffix(got, []byte("hello from alice")) {
		t.Fatalf("bob received %q, want alice's datagram (and nothing from eve)", got)
	}
	send(bob, "hello from bob")
	if got := read(alice, 2*time.Second); !bytes.HasSuffix(got, []byte("hello from bob")) {
		t.Fatalf("alice received %q", got)
	}
	if got := read(eve, 300*time.Millisecond); got != nil {
		t.Fatalf("an unadmitted source received %q", got)
	}
	resp, err := e.httpsClient().Get("https://" + e.mh.apiAddr + "/v1/load")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var load mh.Load
	if err := json.NewDecoder(resp.Body).Decode(&load); err != nil || load.Sessions != 1 || load.Participants != 2 || !load.Admitting {
		t.Fatalf("MH load = %+v (%v)", load, err)
	}
	metrics := get(t, "http://"+e.mh.opsAddr+"/metrics")
	for _, want := range []string{`mh_datagrams_total{result="forwarded"}`, "mh_forwarding_latency_seconds_bucket", "mh_bandwidth_utilization_ratio"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("MH metrics lack %s", want)
		}
	}
}

// smokeCommand runs the preview environments' smoke check against the
// running services: it passes with the tester's credentials, fails the
// token check (and names it, without the secret) with a wrong one, and
// refuses a configuration without a secret.
func (e *env) smokeCommand(t *testing.T) {
	bin := filepath.Join(e.dir, "bin", "darktower-smoke")
	run := func(env ...string) (int, string) {
		cmd := exec.Command(bin)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	base := []string{"SMOKE_AC_URL=https://" + e.ac.apiAddr, "SMOKE_GC_URL=https://" + e.gc.apiAddr,
		"SMOKE_MC_URL=https://" + e.mc.apiAddr, "SMOKE_CA_FILE=" + e.caFile, "SMOKE_CLIENT_ID=e2e-tester", "SMOKE_RETRY_FOR=2s"}
	code, out := run(append(base, "SMOKE_CLIENT_SECRET=tester-secret-e2e-value")...)
	if code != 0 || !strings.Contains(out, "ok   token") || !strings.Contains(out, "ok   mhs") || !strings.Contains(out, "ok   media") || !strings.Contains(out, "mc-e2e") {
		t.Fatalf("darktower-smoke against healthy services: exit %d\n%s", code, out)
	}
	t.Logf("darktower-smoke:\n%s", out)
	wrong := "wrong-secret-value-for-smoke"
	code, out = run(append(base, "SMOKE_CLIENT_SECRET="+wrong)...)
	if code != 1 || !strings.Contains(out, "FAIL token") || !strings.Contains(out, "FAIL media") || !strings.Contains(out, "attempts)") || strings.Contains(out, wrong) {
		t.Fatalf("darktower-smoke with a wrong secret: exit %d (want 1, both checks failed after retries, secret not printed)\n%s", code, out)
	}
	code, out = run(base...)
	if code != 2 || !strings.Contains(out, "SMOKE_CLIENT_SECRET") {
		t.Fatalf("darktower-smoke without a secret: exit %d (want 2 naming SMOKE_CLIENT_SECRET)\n%s", code, out)
	}
	code, out = run(append(base, "SMOKE_CLIENT_SECRET=tester-secret-e2e-value", "SMOKE_MODE=loud")...)
	if code != 2 || !strings.Contains(out, `SMOKE_MODE="loud"`) {
		t.Fatalf("darktower-smoke with an unknown mode: exit %d\n%s", code, out)
	}
	e.smokeLoad(t, bin, append(base, "SMOKE_CLIENT_SECRET=tester-secret-e2e-value"))
	e.smokeLoadOnDemand(t, bin, append(base, "SMOKE_CLIENT_SECRET=tester-secret-e2e-value"))
}

// smokeLoadOnDemand runs the canary proof's load (SMOKE_LOAD_ON_DEMAND):
// no API round until Flagger's pre-rollout webhook starts them, the rollout
// gate refusing until calls are answered, a malformed start refused.
func (e *env) smokeLoadOnDemand(t *testing.T, bin string, env []string) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SMOKE_MODE=load", "SMOKE_LOAD_INTERVAL=200ms", "SMOKE_LOAD_MEDIA=false",
		"SMOKE_LOAD_ON_DEMAND=true", "SMOKE_METRICS_ADDR=" + addr}, env...)
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	post := func(path, body string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("POST %s: %v\n%s", path, err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	answered := func() string {
		t.Helper()
		m := get(t, "http://"+addr+"/metrics")
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "darktower_load_requests_total") && strings.Contains(l, `outcome="ok"`) && !strings.Contains(l, "ac-service") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	const hook = `{"name":"global-controller","namespace":"preview","phase":"Progressing","metadata":{"duration":"1m"}}`
	if code, body := post("/v1/load/gate", hook); code != http.StatusPreconditionFailed || !strings.Contains(body, "not started") {
		t.Errorf("gate before any start: %d %q, want 412 naming the missing start", code, body)
	}
	time.Sleep(time.Second)
	if got := answered(); strings.Contains(got, "} 1") || !strings.Contains(got, "} 0") {
		t.Errorf("API rounds before the start webhook:\n%s", got)
	}
	if code, body := post("/v1/load/start", `{"name":"global-controller","metadata":{"duration":"soon"}}`); code != http.StatusBadRequest || !strings.Contains(body, "soon") {
		t.Errorf("a malformed duration: %d %q, want 400 naming it", code, body)
	}
	if code, body := post("/v1/load/start", hook); code != http.StatusOK || !strings.Contains(body, "load on until") {
		t.Fatalf("start: %d %q\n%s", code, body, out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := post("/v1/load/gate", hook)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gate after the start: %d %q\n%s", code, body, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := answered(); strings.Contains(got, "} 0\n") || strings.HasSuffix(got, "} 0") {
		t.Errorf("no API round answered after the start:\n%s", got)
	}
	if !strings.Contains(out.String(), "started by preview/global-controller's pre-rollout webhook") {
		t.Errorf("the start is not logged:\n%s", out.String())
	}
}

// smokeLoad runs darktower-smoke as the chaos stage's load for a few
// seconds: every call succeeds against healthy services, its media session
// relays, its counters are on /metrics, and SIGTERM ends it cleanly.
func (e *env) smokeLoad(t *testing.T, bin string, env []string) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SMOKE_MODE=load", "SMOKE_LOAD_INTERVAL=200ms", "SMOKE_METRICS_ADDR=" + addr}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(3 * time.Second)
	metrics := get(t, "http://"+addr+"/metrics")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the load did not end cleanly on SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the load did not stop on SIGTERM\n%s", out.String())
	}
	value := func(series string) float64 {
		for _, line := range strings.Split(metrics, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				return f
			}
		}
		t.Fatalf("no %s on /metrics:\n%s", series, metrics)
		return 0
	}
	for _, target := range []string{"ac-service", "global-controller", "meeting-controller"} {
		least := 5.0
		if target == "ac-service" {
			least = 2 // fresh tokens every 2 s, for each of two audiences
		}
		if ok, bad := value(`darktower_load_requests_total{outcome="ok",target="`+target+`"}`), value(`darktower_load_requests_total{outcome="error",target="`+target+`"}`); ok < least || bad != 0 {
			t.Errorf("load against healthy %s: %g ok, %g errors\n%s", target, ok, bad, out.String())
		}
	}
	// By the media-handler that relayed them (its id, as the ticket names it).
	if relayed, lost := value(`darktower_load_datagrams_total{media_handler="mh-e2e",outcome="relayed"}`), value(`darktower_load_datagrams_total{media_handler="mh-e2e",outcome="lost"}`); relayed < 10 || lost != 0 {
		t.Errorf("load's media session: %g relayed, %g lost\n%s", relayed, lost, out.String())
	}
	t.Logf("darktower-smoke load for 3 s:\n%s", out.String())
}

// rotateKey runs `ac-service rotate-key` as an operator would, with AC's
// environment: it schedules the next key and refuses a second rotation.
func (e *env) rotateKey(t *testing.T) {
	run := func() (int, string, string) {
		cmd := exec.Command(e.ac.bin, "rotate-key")
		cmd.Env = e.ac.env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}
	code, out, errOut := run()
	var res struct {
		Kid         string    `json:"kid"`
		ActivatesAt time.Time `json:"activates_at"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Kid == "" {
		t.Fatalf("rotate-key = %d %q %q", code, out, errOut)
	}
	// AC_KEY_RELOAD is 1m here: the key signs from about 70 s on, after this test.
	if d := time.Until(res.ActivatesAt); d < 60*time.Second || d > 71*time.Second {
		t.Fatalf("next key activates in %s, want AC_KEY_RELOAD + 10 s", d)
	}
	if code, _, errOut := run(); code != 1 || !strings.Contains(errOut, "already pending") {
		t.Fatalf("second rotate-key = %d %q", code, errOut)
	}
	for _, secret := range e.secrets {
		if strings.Contains(out+errOut, secret) {
			t.Fatal("rotate-key printed a secret")
		}
	}
}

// admittedPair asks MC for tickets and joins two fresh sockets to session.
func (e *env) admittedPair(t *testing.T, session string) (alice, bob *net.UDPConn, to *net.UDPAddr) {
	to, _ = net.ResolveUDPAddr("udp", e.mediaAddr)
	tok := e.token(t, "meeting-controller")
	join := func(participant string) *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		code, body, _ := testenv.CallJSON(t, e.httpsClient(), "POST", "https://"+e.mc.apiAddr+"/v1/media-tickets", tok,
			wire.MediaTicketRequest{SessionID: session, ParticipantID: participant})
		var mt wire.MediaTicket
		if code != 200 || json.Unmarshal(body, &mt) != nil {
			t.Fatalf("MC ticket = %d %s", code, body)
		}
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
		if n, _, err = c.ReadFromUDP(buf); err != nil || !mh.IsWelcome(buf[:n]) {
			t.Fatalf("no welcome: %v", err)
		}
		return c
	}
	return join("alice"), join("bob"), to
}

func (e *env) mhLoad(t *testing.T) mh.Load {
	resp, err := e.httpsClient().Get("https://" + e.mh.apiAddr + "/v1/load")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var load mh.Load
	_ = json.NewDecoder(resp.Body).Decode(&load)
	return load
}

// Finding 5: with PostgreSQL frozen (GC cannot register MCs, so MC and then
// MH lose their upstream), MH stays ready and keeps relaying the live
// session; it stops admitting new sessions; AC stays ready (it signs from
// memory). Everything recovers after the thaw.
func (e *env) databaseFreeze(t *testing.T) {
	alice, bob, to := e.admittedPair(t, "meeting-freeze")
	const freezeFor = 6 * time.Second
	if err := e.pg.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	thawed := false
	defer func() {
		if !thawed {
			_ = e.pg.Thaw()
		}
	}()
	// The live call: a frame every 50 ms, each awaited, for the whole freeze.
	var sent, received, mhProbes, mhNotReady int
	media := make(chan struct{})
	go func() {
		defer close(media)
		buf := make([]byte, 1500)
		for time.Since(frozen) < freezeFor {
			d, _ := mh.EncodeDatagram("meeting-freeze", []byte(fmt.Sprint("frame ", sent)))
			if _, err := alice.WriteToUDP(d, to); err != nil {
				return
			}
			sent++
			_ = bob.SetReadDeadline(time.Now().Add(time.Second))
			if n, _, err := bob.ReadFromUDP(buf); err == nil && bytes.HasSuffix(buf[:n], []byte(fmt.Sprint("frame ", sent-1))) {
				received++
			}
			mhProbes++
			if code, _ := e.mh.ready(); code != 200 {
				mhNotReady++
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	notReady := map[string]int{}
	rounds := 0
	sawNotAdmitting := false
	for time.Since(frozen) < freezeFor {
		rounds++
		for _, s := range []*service{e.ac, e.gc, e.mc, e.mh} {
			if code, _ := s.ready(); code != 200 {
				notReady[s.name]++
			}
		}
		if !e.mhLoad(t).Admitting {
			sawNotAdmitting = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-media
	if err := e.pg.Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	thawedAt := time.Now()
	waitFor(t, 30*time.Second, "all ready and MH admitting after the thaw", func() bool {
		for _, s := range e.all() {
			if code, _ := s.ready(); code != 200 {
				return false
			}
		}
		return e.mhLoad(t).Admitting
	})
	t.Logf("FIGURE database freeze %s: live session relayed %d/%d frames; MH /ready 503 in %d of %d probes; /ready 503 samples: %v (of %d rounds over all four); MH stopped admitting new sessions: %v; all ready and admitting %s after the thaw",
		freezeFor, received, sent, mhNotReady, mhProbes, notReady, rounds, sawNotAdmitting, time.Since(thawedAt).Round(time.Millisecond))
	if received != sent {
		t.Errorf("live media interrupted: %d of %d frames relayed during the freeze", received, sent)
	}
	if mhNotReady > 0 || notReady["media-handler"] > 0 || notReady["ac-service"] > 0 {
		t.Errorf("MH or AC went not ready during the freeze: %v", notReady)
	}
	if !sawNotAdmitting {
		t.Error("MH kept admitting new sessions while its MC could not register with GC")
	}
}

func (e *env) redisOutage(t *testing.T) {
	pid := e.mc.cmd.Process.Pid
	e.redis.Kill()
	killed := time.Now()
	// The kubelet probes every periodSeconds; MC must answer 503 by the
	// second probe after the outage.
	var notReadyAfter time.Duration
	for probe := 1; ; probe++ {
		time.Sleep(min(probePeriod, time.Until(killed.Add(time.Duration(probe)*probePeriod))))
		if code, body := e.mc.ready(); code == 503 && strings.Contains(body, `"redis":"unhealthy"`) {
			notReadyAfter = time.Since(killed)
			break
		}
		if probe == 2 {
			t.Fatalf("MC still ready two probe periods (%s) after Redis stopped", 2*probePeriod)
		}
	}
	if err := e.redis.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	waitFor(t, 30*time.Second, "MC ready again after Redis restart", func() bool { code, _ := e.mc.ready(); return code == 200 })
	recovered := time.Since(restarted)
	waitFor(t, 30*time.Second, "MH ready again", func() bool { code, _ := e.mh.ready(); return code == 200 })
	if !e.mc.running() || e.mc.cmd.Process.Pid != pid {
		t.Fatal("MC was restarted; it must recover in place")
	}
	t.Logf("FIGURE redis outage: MC /ready 503 observed %s after kill (probe-paced, limit %s); 200 again %s after restart, same PID",
		notReadyAfter.Round(time.Millisecond), 2*probePeriod, recovered.Round(time.Millisecond))
}

func (e *env) sigterm(t *testing.T) {
	for _, s := range []*service{e.mh, e.mc, e.gc, e.ac} {
		sent := time.Now()
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// The ops listener keeps answering through SHUTDOWN_DELAY and the
		// drain; /ready must say 503 during that time.
		sawNotReady := false
		for !sawNotReady && s.running() {
			code, _ := s.ready()
			sawNotReady = code == 503
		}
		select {
		case <-s.exited:
		case <-time.After(200*time.Millisecond + 5*time.Second + 5*time.Second):
			t.Fatalf("%s did not exit within SHUTDOWN_DELAY + SHUTDOWN_GRACE", s.name)
		}
		if !sawNotReady {
			t.Errorf("%s never answered /ready 503 between SIGTERM and exit", s.name)
		}
		if s.exitCode != 0 || !strings.Contains(s.logs(), `"msg":"stopped cleanly"`) {
			t.Errorf("%s exited %d", s.name, s.exitCode)
		}
		t.Logf("FIGURE %s: SIGTERM to exit 0 in %s", s.name, time.Since(sent).Round(time.Millisecond))
		// MH and MC withdraw their registrations as they drain: the service
		// they registered with (still running) lists them no more, well
		// before their TTL.
		var listURL, audience, id string
		switch s {
		case e.mh:
			listURL, audience, id = "https://"+e.mc.apiAddr+"/v1/media-handlers", "meeting-controller", "mh-e2e"
		case e.mc:
			listURL, audience, id = "https://"+e.gc.apiAddr+"/v1/meeting-controllers", "global-controller", "mc-e2e"
		default:
			continue
		}
		if !strings.Contains(s.logs(), `"msg":"deregistered from`) {
			t.Errorf("%s did not log its deregistration", s.name)
		}
		code, body, _ := testenv.CallJSON(t, e.httpsClient(), "GET", listURL, e.token(t, audience), nil)
		if code != 200 || strings.Contains(string(body), `"`+id+`"`) {
			t.Errorf("%s still lists %s after its SIGTERM: %d %s", listURL, id, code, body)
		}
	}
}

func (e *env) noSecretsInLogs(t *testing.T) {
	for _, s := range e.all() {
		logs := s.logs()
		for _, secret := range e.secrets {
			if strings.Contains(logs, secret) {
				t.Errorf("%s's log contains a secret (%.4s…)", s.name, secret)
			}
		}
		if strings.Contains(logs, "eyJ") {
			t.Errorf("%s's log contains something that looks like a JWT", s.name)
		}
	}
}

func TestBadConfigurationExitsWithOneLinePerProblem(t *testing.T) {
	bin := t.TempDir()
	buildBinaries(t, bin)
	cmd := exec.Command(filepath.Join(bin, "ac-service"))
	cmd.Env = []string{"AC_MASTER_KEY=dG9vIHNob3J0", "OPS_ADDR=nonsense"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, want := range []string{"OPS_ADDR", "TLS_CERT_FILE", "TLS_KEY_FILE", "AC_DATABASE_URL", "AC_MASTER_KEY", "AC_CLIENTS_FILE"} {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "ac-service: configuration: "+want+" ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines name %s, want 1:\n%s", n, want, out)
		}
	}
	if len(lines) != 6 || strings.Contains(string(out), "dG9vIHNob3J0") {
		t.Errorf("unexpected output:\n%s", out)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, u string) string {
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprint(string(b))
}
