package mh

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Two MCs behind one name (127.0.0.1 and 127.0.0.2 on one port, as a
// headless Service's pods are): with MH_MC_PEERS, MH registers with both,
// learns both ticket keys, and stops beating to an MC that leaves.
func TestRegistersWithEveryMCOfThePeersName(t *testing.T) {
	dir := t.TempDir()
	pki, err := testenv.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := pki.Issue("meeting-controller")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := first.Addr().(*net.TCPAddr).Port
	second, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		first.Close()
		t.Skipf("a second loopback address on one port is not available here: %v", err)
	}
	var mu sync.Mutex
	beats := map[string]int{}
	keys := map[string]mticket.Key{}
	serve := func(ln net.Listener, name string) *http.Server {
		key, _ := mticket.NewKey()
		keys[name] = key
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/oauth/token", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"token-for-test","token_type":"Bearer","expires_in":3600}`))
		})
		mux.HandleFunc("POST /v1/media-handlers", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer token-for-test" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			mu.Lock()
			beats[name]++
			mu.Unlock()
			wire.WriteJSON(w, http.StatusOK, wire.MHRegistrationReply{ID: testMH,
				TicketKey: wire.TicketKey{KeyID: key.ID.String(), Secret: base64.StdEncoding.EncodeToString(key.Secret[:])}})
		})
		srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	serve(first, "mc-a")
	srvB := serve(second, "mc-b")

	kit, _ := testenv.Kit(t, "media-handler", pki.CAFile)
	base := "https://meeting-controller:" + strconv.Itoa(port)
	s := NewService(kit, Config{ID: testMH, HeartbeatInterval: 50 * time.Millisecond, CapacityMbps: 1000, MeterWindow: time.Second,
		IdleTimeout: time.Minute, Limits: DefaultLimits, ClientID: "media-handler", ClientSecret: envconf.NewSecret("x"),
		MCAudience: "meeting-controller", MCURL: base, MCPeers: "meeting-controller-peers",
		// AC is served by the first MC's listener here; its name resolves
		// normally, only MH_MC_URL's host:port is pinned per MC.
		TokenURL: "https://127.0.0.1:" + strconv.Itoa(port) + "/v1/oauth/token"})
	var peers sync.Mutex
	addrs := []string{"127.0.0.1", "127.0.0.2"}
	s.lookupHost = func(_ context.Context, host string) ([]string, error) {
		if host != "meeting-controller-peers" {
			t.Errorf("resolved %q, want MH_MC_PEERS", host)
		}
		peers.Lock()
		defer peers.Unlock()
		return append([]string{}, addrs...), nil
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s.relay = NewRelay(conn, s.meter, RelayConfig{ID: testMH, Idle: time.Minute, Limits: DefaultLimits, Keys: s.keys,
		AdmitNewSessions: s.mcFresh}, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.heartbeat(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	count := func(name string) int { mu.Lock(); defer mu.Unlock(); return beats[name] }
	deadline := time.Now().Add(10 * time.Second)
	for (count("mc-a") < 2 || count("mc-b") < 2) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if count("mc-a") < 2 || count("mc-b") < 2 {
		t.Fatalf("heartbeats: %v, want both MCs beaten to", beats)
	}
	if s.keys.Len() < 2 {
		t.Fatalf("MH holds %d ticket keys, want both MCs'", s.keys.Len())
	}
	// mc-b leaves the name: its beats stop.
	peers.Lock()
	addrs = []string{"127.0.0.1"}
	peers.Unlock()
	srvB.Close()
	time.Sleep(300 * time.Millisecond) // the next resolution stops mc-b's heartbeat
	stoppedAt := count("mc-b")
	time.Sleep(300 * time.Millisecond)
	if got := count("mc-b"); got != stoppedAt {
		t.Fatalf("still beating to a departed MC: %d → %d", stoppedAt, got)
	}
	before := count("mc-a")
	time.Sleep(200 * time.Millisecond)
	if count("mc-a") <= before {
		t.Fatal("heartbeats to the remaining MC stopped")
	}
}
