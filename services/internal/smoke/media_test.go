package smoke

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/mh"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mediaHandler is a real MH relay on a loopback UDP port, holding the
// ticket key of the stand-in meeting-controller.
type mediaHandler struct {
	id    string
	relay *mh.Relay
	addr  string
}

func startMediaHandler(t *testing.T, id string, key mticket.Key) *mediaHandler {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ring := &mh.KeyRing{}
	ring.Add(key, time.Now())
	limits := mh.DefaultLimits
	// Every participant of the load comes from 127.0.0.1 and rotates fast.
	limits.MaxPerSourceIP, limits.JoinRatePerSource = 10_000, 10_000
	r := mh.NewRelay(conn, mh.NewMeter(1e9, 5*time.Second), mh.RelayConfig{ID: id, Idle: time.Second, Limits: limits, Keys: ring},
		prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- r.Serve() }()
	stop := make(chan struct{})
	go func() { // MH's Run expires idle participants every second
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				r.Expire(now)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("%s: Serve = %v", id, err)
		}
	})
	return &mediaHandler{id: id, relay: r, addr: conn.LocalAddr().String()}
}

// standInMC answers the load's token requests (as ac-service) and ticket
// requests (as meeting-controller: rendezvous hashing of the session id
// over its MHs, real tickets signed with the key the MHs hold). It is not
// the real meeting-controller, which needs Redis, global-controller and
// ac-service's keys: what is under test is the load's side.
type standInMC struct {
	srv      *httptest.Server
	caFile   string
	mu       sync.Mutex
	sessions map[string]string // session id → MH id
	tickets  map[string]int    // session id → tickets issued for it
}

func startStandInMC(t *testing.T, key mticket.Key, mhs ...*mediaHandler) *standInMC {
	s := &standInMC{sessions: map[string]string{}, tickets: map[string]int{}}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/oauth/token":
			wire.WriteJSON(w, http.StatusOK, map[string]any{"access_token": "t", "token_type": "Bearer", "expires_in": 3600})
		case "/v1/media-tickets":
			var req wire.MediaTicketRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var best *mediaHandler
			var bestScore uint64
			for _, m := range mhs {
				h := fnv.New64a()
				io.WriteString(h, req.SessionID+"\x00"+m.id)
				if score := h.Sum64(); best == nil || score > bestScore {
					best, bestScore = m, score
				}
			}
			exp := time.Now().Add(time.Minute)
			raw, err := mticket.Issue(key, best.id, req.SessionID, req.ParticipantID, exp)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			s.mu.Lock()
			s.sessions[req.SessionID] = best.id
			s.tickets[req.SessionID]++
			s.mu.Unlock()
			wire.WriteJSON(w, http.StatusOK, wire.MediaTicket{Ticket: base64.RawURLEncoding.EncodeToString(raw), MediaHandler: best.id,
				MediaAddr: best.addr, ExpiresAt: exp})
		default:
			http.Error(w, "not here", http.StatusNotFound)
		}
	}))
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// counts: session ids seen, the most tickets issued for one, and the
// sessions placed on each MH.
func (s *standInMC) counts() (sessions, maxTickets int, perMH map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	perMH = map[string]int{}
	for id, m := range s.sessions {
		perMH[m]++
		maxTickets = max(maxTickets, s.tickets[id])
	}
	return len(s.sessions), maxTickets, perMH
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
	}
}

// Several media sessions, started on demand, spread over two real
// media-handlers and counted per media-handler; each is replaced by a new
// session (a new id, placed anew) after its lifetime; media-handler's gate
// opens once datagrams are relayed; and the sessions close when the start
// runs out.
func TestMediaSessionsSpreadRotateAndGate(t *testing.T) {
	key, err := mticket.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	mh0, mh1 := startMediaHandler(t, "media-handler-stable-0", key), startMediaHandler(t, "media-handler-canary-0", key)
	mc := startStandInMC(t, key, mh0, mh1)
	reg := prometheus.NewRegistry()
	l := NewLoad(Config{ACURL: mc.srv.URL, GCURL: mc.srv.URL, MCURL: mc.srv.URL, CAFile: mc.caFile, ClientID: "load",
		Timeout: 500 * time.Millisecond}, 100*time.Millisecond, reg)
	l.OnDemand, l.MediaSessions, l.MediaLifetime = true, 8, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	time.Sleep(400 * time.Millisecond)
	if sessions, _, _ := mc.counts(); sessions != 0 {
		t.Fatalf("%d media sessions opened before the load was started", sessions)
	}
	if err := l.Flowing("media-handler"); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("media-handler's gate before a start: %v", err)
	}
	l.Start(time.Minute)
	if err := l.Flowing("media-handler"); err == nil || !strings.Contains(err.Error(), "no media datagram relayed") {
		t.Fatalf("media-handler's gate before media flowed: %v", err)
	}
	waitFor(t, "media-handler's gate opens", 5*time.Second, func() bool { return l.Flowing("media-handler") == nil })
	waitFor(t, "8 sessions at once on the two media-handlers", 5*time.Second, func() bool {
		s0, _ := mh0.relay.Counts()
		s1, _ := mh1.relay.Counts()
		return s0+s1 >= 8 && s0 > 0 && s1 > 0
	})
	// Rotation: sessions are replaced by new ones (new ids, placed anew);
	// the first lifetimes are staggered in [0, 1 s), the next are 1 s.
	waitFor(t, "8 sessions replaced by new ones", 5*time.Second, func() bool {
		sessions, _, _ := mc.counts()
		return sessions >= 16
	})
	sessions, maxTickets, perMH := mc.counts()
	t.Logf("%d session ids placed: %v", sessions, perMH)
	if maxTickets > 2 {
		t.Errorf("%d tickets for one session id: a session id was reused", maxTickets)
	}
	if len(perMH) != 2 {
		t.Errorf("sessions placed on %v, want both media-handlers", perMH)
	}
	for _, m := range []*mediaHandler{mh0, mh1} {
		// Eventually: a session placed on it may have rotated away before
		// its first relay (staggered first lifetimes; a busy machine — the
		// test command's other lane — ran one 17-session round with 5 on
		// one media-handler and none relayed yet when counted at once).
		waitFor(t, "a datagram relayed through "+m.id, 5*time.Second, func() bool {
			return testutil.ToFloat64(l.dgrams.WithLabelValues(m.id, "relayed")) > 0
		})
		relayed := testutil.ToFloat64(l.dgrams.WithLabelValues(m.id, "relayed"))
		lost := testutil.ToFloat64(l.dgrams.WithLabelValues(m.id, "lost"))
		t.Logf("%s: relayed %g, lost %g", m.id, relayed, lost)
	}
	if n := testutil.CollectAndCount(l.dgrams); n != 4 {
		t.Errorf("%d darktower_load_datagrams_total series, want 4 (two media-handlers × relayed, lost)", n)
	}
	if n := testutil.ToFloat64(l.rejoins); n != 0 {
		t.Errorf("%g rejoins: a rotation is not a rejoin", n)
	}

	// The start runs out: the sessions close, nothing more is relayed.
	l.until.Store(0)
	waitFor(t, "the sessions closed after the start ran out", 5*time.Second, func() bool {
		s0, _ := mh0.relay.Counts()
		s1, _ := mh1.relay.Counts()
		return s0+s1 == 0 // their participants went idle and expired
	})
	before := testutil.ToFloat64(l.dgrams.WithLabelValues(mh0.id, "relayed")) + testutil.ToFloat64(l.dgrams.WithLabelValues(mh1.id, "relayed"))
	time.Sleep(300 * time.Millisecond)
	after := testutil.ToFloat64(l.dgrams.WithLabelValues(mh0.id, "relayed")) + testutil.ToFloat64(l.dgrams.WithLabelValues(mh1.id, "relayed"))
	if after != before {
		t.Errorf("%g datagrams relayed after the start ran out", after-before)
	}
	if err := l.Flowing("media-handler"); err == nil {
		t.Error("media-handler's gate open after the start ran out")
	}
}
