package flaggw_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The gateway runs as its real binary (so that a test can SIGKILL it),
// built once here; etcd is the real server ($DARKTOWER_ETCD).
var (
	gatewayBin string
	pki        *testenv.PKI
	certFile   string
	keyFile    string
	// ac stands in for ac-service: its JWKS (over TLS, from the test CA)
	// verifies the subscribers' tokens, which it signs.
	ac      authn.Signer
	jwksURL string
)

const prefix = "/darktower/flags/test/"

func TestMain(m *testing.M) {
	if _, err := testenv.EtcdBinary(); err != nil {
		fmt.Fprintln(os.Stderr, "flaggw tests:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "flaggw-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = filepath.Join(dir, "flag-gateway")
	build := exec.Command("go", "build", "-o", gatewayBin, "../../cmd/flag-gateway")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building cmd/flag-gateway:", err)
		os.Exit(1)
	}
	if pki, err = testenv.NewPKI(dir); err == nil {
		certFile, keyFile, err = pki.Issue("flag-gateway")
	}
	var stopJWKS func()
	if err == nil {
		stopJWKS, err = startJWKS()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stopJWKS()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startJWKS serves ac's public key over TLS with a certificate of the
// test CA (the gateway trusts it through TLS_CA_FILE).
func startJWKS() (func(), error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ac = authn.Signer{KeyID: "test-key", Key: priv, Issuer: "https://ac-service", TTL: 5 * time.Minute}
	set, _ := json.Marshal(authn.JWKS{Keys: []authn.JWK{authn.PublicJWK("test-key", pub)}})
	cert, key, err := pki.Issue("ac-service")
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(set) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	jwksURL = srv.URL + "/.well-known/jwks.json"
	return srv.Close, nil
}

// tokenFor is a token source issuing ac's tokens for subject and audience.
func tokenFor(subject, audience string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		tok, _, err := ac.Issue(subject, audience, time.Now())
		return tok, err
	}
}

func startEtcd(t *testing.T) *testenv.Etcd {
	t.Helper()
	e, err := testenv.StartEtcd()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func etcdClient(t *testing.T, e *testenv.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(t *testing.T, cli *clientv3.Client, name, value string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cli.Put(ctx, prefix+name, value)
	if err != nil {
		t.Fatalf("put %s=%s: %v", name, value, err)
	}
	return r.Header.Revision
}

// gateway is one flag-gateway process; Start after Kill or Term reuses
// its ports, as a restarted pod keeps its Service.
type gateway struct {
	t                *testing.T
	env              []string
	opsAddr, apiAddr string
	cmd              *exec.Cmd
	logs             *testenv.SyncBuffer
	exited           chan error
}

func startGateway(t *testing.T, etcdEndpoint string, extra ...string) *gateway {
	t.Helper()
	ops, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	api, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, opsAddr: "127.0.0.1:" + strconv.Itoa(ops), apiAddr: "127.0.0.1:" + strconv.Itoa(api), logs: &testenv.SyncBuffer{}}
	g.env = append([]string{"PATH=" + os.Getenv("PATH"), "OPS_ADDR=" + g.opsAddr, "API_ADDR=" + g.apiAddr,
		"TLS_CERT_FILE=" + certFile, "TLS_KEY_FILE=" + keyFile, "SHUTDOWN_DELAY=0s", "SHUTDOWN_GRACE=5s",
		"FLAGS_ETCD_ENDPOINTS=" + etcdEndpoint, "FLAGS_PREFIX=" + prefix, "FLAGS_HEARTBEAT=1s", "FLAGS_ETCD_TIMEOUT=500ms",
		"API_MAX_CONNS_PER_SOURCE=2000", "TLS_CA_FILE=" + pki.CAFile, "FLAGS_AC_JWKS_URL=" + jwksURL}, extra...)
	g.Start()
	t.Cleanup(func() {
		if g.cmd != nil && g.cmd.ProcessState == nil {
			g.Kill()
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.logs)
		}
	})
	return g
}

// Start runs the process and waits until it serves /health.
func (g *gateway) Start() {
	g.t.Helper()
	g.cmd = exec.Command(gatewayBin)
	g.cmd.Env = g.env
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.exited = make(chan error, 1)
	cmd := g.cmd
	go func() { g.exited <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + g.opsAddr + "/health")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not serving /health after 20 s: %v\n%s", err, g.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill is a crash: SIGKILL, no goodbye to the subscribers.
func (g *gateway) Kill() {
	_ = g.cmd.Process.Kill()
	<-g.exited
}

// Term is a graceful shutdown; it returns the exit error.
func (g *gateway) Term() error {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-g.exited:
		return err
	case <-time.After(20 * time.Second):
		g.Kill()
		return fmt.Errorf("did not exit within 20 s of SIGTERM")
	}
}

func (g *gateway) URL() string { return "wss://" + g.apiAddr + flags.WatchPath }

// Ready is /ready's status code.
func (g *gateway) Ready() int {
	resp, err := http.Get("http://" + g.opsAddr + "/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until /ready answers want and returns how long it took.
func (g *gateway) waitReady(want int, timeout time.Duration) time.Duration {
	g.t.Helper()
	start := time.Now()
	for g.Ready() != want {
		if time.Since(start) > timeout {
			g.t.Fatalf("/ready not %d after %s\n%s", want, timeout, g.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// Metric is the value of an unlabelled series on /metrics.
func (g *gateway) Metric(name string) float64 {
	g.t.Helper()
	resp, err := http.Get("http://" + g.opsAddr + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	g.t.Fatalf("no %s on /metrics", name)
	return 0
}

// event is one value change a client applied.
type event struct {
	name, value string
	src         flags.Source
	rev         int64
	at          time.Time
}

type client struct {
	*flags.Client
	logs   *testenv.SyncBuffer
	mu     sync.Mutex
	events []event
	cancel context.CancelFunc
	done   chan struct{}
}

func tlsConfig(t testing.TB) *tls.Config {
	pem, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// startClient runs a flags client against url with the cache file (""
// for none) until the test ends.
func startClient(t *testing.T, url, cacheFile string) *client {
	t.Helper()
	return startClientWith(t, url, cacheFile, tokenFor("meeting-controller", "flag-gateway"))
}

// startClientWith is startClient subscribing with token (nil: none).
func startClientWith(t *testing.T, url, cacheFile string, token func(context.Context) (string, error)) *client {
	t.Helper()
	c := &client{logs: &testenv.SyncBuffer{}, done: make(chan struct{})}
	c.Client = flags.New(flags.Options{URL: url, HTTPClient: flags.HTTPClient(tlsConfig(t)), CacheFile: cacheFile,
		Logger: slog.New(slog.NewJSONHandler(c.logs, nil)), Registry: prometheus.NewRegistry(),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Token: token,
		OnChange: func(name string, v flags.Value, src flags.Source, rev int64) {
			c.mu.Lock()
			c.events = append(c.events, event{name, v.Raw, src, rev, time.Now()})
			c.mu.Unlock()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { _ = c.Run(ctx); close(c.done) }()
	t.Cleanup(c.Stop)
	return c
}

func (c *client) Stop() {
	c.cancel()
	<-c.done
}

// waitValue waits until the client holds value for name and returns when
// it changed to it.
func (c *client) waitValue(t *testing.T, name, value string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		for i := len(c.events) - 1; i >= 0; i-- {
			if e := c.events[i]; e.name == name {
				if e.value == value {
					c.mu.Unlock()
					return e.at
				}
				break
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			v, src, _ := c.Lookup(name)
			t.Fatalf("client: %s is %q (%s) after %s, want %q\n%s", name, v.Raw, src, timeout, value, c.logs)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkMonotonic fails if any flag's applied revisions ever went back.
func (c *client) checkMonotonic(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	last := map[string]int64{}
	for _, e := range c.events {
		if e.rev <= last[e.name] {
			t.Errorf("%s went back: revision %d (%q) after %d", e.name, e.rev, e.value, last[e.name])
		}
		last[e.name] = e.rev
	}
}

func (c *client) valuesOf(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		if e.name == name {
			out = append(out, e.value)
		}
	}
	return out
}

func waitConnected(t *testing.T, c *client, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for !c.Connected() {
		if time.Since(start) > timeout {
			t.Fatalf("client not connected after %s\n%s", timeout, c.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// runGatewayOnce runs the binary with env until it exits (configuration
// errors) and returns its output and exit code.
func runGatewayOnce(t *testing.T, env []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// tcpProxy forwards a loopback port to etcd; Cut drops every connection
// and refuses new ones, Restore listens again on the same port. It puts
// the gateway out of etcd's reach while etcd stays up for writers.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
			go func() { _, _ = io.Copy(c, up); up.Close(); c.Close() }()
		}
	}()
}

func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *tcpProxy) Restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}
