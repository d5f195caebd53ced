package smoke

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The rollout gate judges the canary's own service: answered calls to
// global-controller do not open the gate of meeting-controller's canary.
func TestGatePerCanaryTarget(t *testing.T) {
	l := NewLoad(Config{}, 100*time.Millisecond, prometheus.NewRegistry())
	l.OnDemand = true
	if err := l.Flowing("global-controller"); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("before a start: %v", err)
	}
	until := l.Start(time.Minute)
	if again := l.Start(time.Second); !again.Equal(until) {
		t.Errorf("a shorter start moved the end from %s to %s", until, again)
	}
	l.count("global-controller", nil, io.Discard)
	if err := l.Flowing("global-controller"); err != nil {
		t.Errorf("global-controller answered: %v", err)
	}
	if err := l.Flowing("meeting-controller"); err == nil || !strings.Contains(err.Error(), "meeting-controller") {
		t.Errorf("meeting-controller never answered, gate open: %v", err)
	}
	if err := l.Flowing("flag-gateway"); err != nil {
		t.Errorf("a canary the rounds do not call is judged on any answer: %v", err)
	}
	if err := l.Flowing("media-handler"); err == nil || !strings.Contains(err.Error(), "no media datagram relayed") {
		t.Errorf("media-handler is judged on the media sessions, none relayed: %v", err)
	}
	time.Sleep(350 * time.Millisecond) // more than three rounds
	if err := l.Flowing("global-controller"); err == nil || !strings.Contains(err.Error(), "answered for") {
		t.Errorf("no answer for three rounds, gate open: %v", err)
	}
}

// The key-set fetches (ac-service's rollout traffic) run only while the
// load is started, each on a connection of its own so that a Service
// spreads them over its pods, and they open ac-service's gate.
func TestKeySetFetchesEachOnANewConnection(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]int{}
	var other atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			other.Add(1)
			http.Error(w, "no tokens here", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		conns[r.RemoteAddr]++
		mu.Unlock()
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	l := NewLoad(Config{ACURL: srv.URL, GCURL: srv.URL, MCURL: srv.URL, CAFile: ca}, 100*time.Millisecond, prometheus.NewRegistry())
	l.OnDemand, l.Media, l.KeySetRate = true, false, 40
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx, io.Discard) }()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	before := len(conns)
	mu.Unlock()
	if before != 0 {
		t.Errorf("%d key-set fetches before the load was started", before)
	}
	l.Start(time.Minute)
	time.Sleep(500 * time.Millisecond)
	if err := l.Flowing("ac-service"); err != nil {
		t.Errorf("key sets fetched, gate for ac-service closed: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fetches := 0
	for addr, n := range conns {
		fetches += n
		if n > 1 {
			t.Errorf("connection %s carried %d fetches, want one each", addr, n)
		}
	}
	if fetches < 10 {
		t.Errorf("%d key-set fetches in 0.5 s at 40 a second", fetches)
	}
	t.Logf("%d key-set fetches on %d connections; %d other calls (token renewals)", fetches, len(conns), other.Load())
}
