package mc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeGC is global-controller's registration endpoint (and AC's token
// endpoint) over TLS and HTTP/2, as the services call each other; refuse
// makes it answer registrations 503 (GC not ready).
type fakeGC struct {
	srv    *httptest.Server
	beats  atomic.Int64
	refuse atomic.Bool
}

func newFakeGC(t *testing.T) *fakeGC {
	g := &fakeGC{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/oauth/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"token-for-test","token_type":"Bearer","expires_in":3600}`))
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[]}`))
	})
	mux.HandleFunc("POST /v1/meeting-controllers", func(w http.ResponseWriter, _ *http.Request) {
		if g.refuse.Load() {
			http.Error(w, `{"error":"not ready"}`, http.StatusServiceUnavailable)
			return
		}
		g.beats.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	})
	g.srv = httptest.NewUnstartedServer(mux)
	g.srv.EnableHTTP2 = true
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	return g
}

// client is the services' own HTTP client (opskit: HTTP/2, pooled
// connections, its timeouts), trusting the fake's certificate.
func (g *fakeGC) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(g.srv.Certificate())
	return opskit.NewHTTPClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
}

// lossyLink forwards TCP to a server and can lose every packet, as the
// chaos stage's pod-network-loss does to a pod: during the loss every
// connection stays open but carries nothing, and connections made meanwhile
// carry nothing either. After the loss, new connections work; the ones the
// loss caught stay silent (TCP resumes them only at its next
// retransmission, by then seconds to minutes away; here never).
type lossyLink struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	losing bool
	conns  []*linkConn
}

type linkConn struct {
	dead      atomic.Bool
	down, up  net.Conn
	closeOnce sync.Once
	closeBoth func()
}

func newLossyLink(t *testing.T, target string) *lossyLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lossyLink{ln: ln, target: target}
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *lossyLink) addr() string { return l.ln.Addr().String() }

func (l *lossyLink) serve() {
	for {
		down, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.target)
		if err != nil {
			down.Close()
			continue
		}
		c := &linkConn{down: down, up: up}
		c.closeBoth = func() { c.closeOnce.Do(func() { down.Close(); up.Close() }) }
		l.mu.Lock()
		c.dead.Store(l.losing)
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		go c.pipe(down, up)
		go c.pipe(up, down)
	}
}

func (c *linkConn) pipe(from, to net.Conn) {
	defer c.closeBoth()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && !c.dead.Load() {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// lose starts the loss: every open connection goes silent for good.
func (l *lossyLink) lose() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.losing = true
	for _, c := range l.conns {
		c.dead.Store(true)
	}
}

// restore ends the loss for new connections.
func (l *lossyLink) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.losing = false
}

func (l *lossyLink) close() {
	l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.closeBoth()
	}
}

// runMC starts svc's background work (JWKS, GC registration) until the
// test ends.
func runMC(t *testing.T, svc *Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// Found by the chaos stage: an MC whose network was cut for 20 s
// (pod-network-loss) stayed registered with GC only until its registration
// aged past three heartbeat intervals, several seconds after its network
// was back, and meanwhile refused every ticket 503 ("meeting controller
// not ready") and every MH registration: its next attempt was a whole
// interval away, and it went to the HTTP/2 connection the loss had
// silenced. An MC must re-register promptly once GC is reachable again.
func TestGCRegistrationRecoversPromptlyAfterANetworkLoss(t *testing.T) {
	gc := newFakeGC(t)
	link := newLossyLink(t, gc.srv.Listener.Addr().String())
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	kit.HTTPClient = gc.client()
	base := "https://" + link.addr()
	const interval = time.Second
	svc := NewService(kit, Config{ID: "mc-lossy", Region: "local", RedisAddr: rds.Addr(), ClientSecret: envconf.NewSecret("x"),
		GCURL: base, TokenURL: base + "/v1/oauth/token", JWKSURL: gc.srv.URL + "/jwks", ClientID: "meeting-controller",
		GCAudience: "global-controller", HeartbeatInterval: interval, MHTTL: 30 * time.Second})
	defer svc.Close()
	runMC(t, svc)
	if !waitFor(5*time.Second, func() bool { return gc.beats.Load() >= 2 }) {
		t.Fatalf("MC did not register with GC: %d registrations", gc.beats.Load())
	}
	link.lose()
	before := gc.beats.Load()
	time.Sleep(interval + interval/2) // at least one registration lost
	link.restore()
	restored := time.Now()
	// Back within its retry (and the lost attempt's own timeout, one
	// interval here): well before a second interval has passed.
	if !waitFor(2*interval+interval/2, func() bool { return gc.beats.Load() > before }) {
		t.Fatalf("no registration reached GC in %s after the network came back (%d before the loss, %d since)",
			time.Since(restored).Round(time.Millisecond), before, gc.beats.Load())
	}
	if !svc.ready(context.Background()) {
		t.Fatalf("MC not ready %s after the network came back: %v", time.Since(restored).Round(time.Millisecond),
			svc.gcReg.Within(svc.registrationMaxAge(), time.Now()))
	}
}

// A refused GC registration (GC not ready, or just restarted) is retried
// within seconds, not a heartbeat interval later: until it succeeds the
// MC is not ready and refuses MH registrations and tickets.
func TestRefusedGCRegistrationIsRetriedWithinSeconds(t *testing.T) {
	gc := newFakeGC(t)
	gc.refuse.Store(true)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	kit.HTTPClient = gc.client()
	const interval = 10 * time.Second // the manifests' MC_HEARTBEAT_INTERVAL default
	svc := NewService(kit, Config{ID: "mc-refused", Region: "local", RedisAddr: rds.Addr(), ClientSecret: envconf.NewSecret("x"),
		GCURL: gc.srv.URL, TokenURL: gc.srv.URL + "/v1/oauth/token", JWKSURL: gc.srv.URL + "/jwks", ClientID: "meeting-controller",
		GCAudience: "global-controller", HeartbeatInterval: interval, MHTTL: 30 * time.Second})
	defer svc.Close()
	runMC(t, svc)
	// The first attempt is refused; GC comes back at once.
	if !waitFor(5*time.Second, func() bool { return testutil.ToFloat64(svc.beats.WithLabelValues("error")) >= 1 }) {
		t.Fatal("MC made no registration attempt")
	}
	gc.refuse.Store(false)
	back := time.Now()
	if !waitFor(4*time.Second, func() bool { return gc.beats.Load() >= 1 }) {
		t.Fatalf("GC registration not retried within %s of a refusal (interval %s)", time.Since(back).Round(time.Millisecond), interval)
	}
}
