package mc

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// TestPlacementFollowsTheStrategyFlagAtEachTicket: with
// mc.mh_selection.strategy at its static default MC places sessions by
// rendezvous hashing, as before flags; least-loaded then puts every new
// session on the least utilised MH, round-robin takes the MHs in turn
// (the flag applied to MC's flag client as the gateway pushes it, read at
// each ticket). Whatever the strategy, a session already placed keeps its
// MH for its next participants while that MH admits, and moves when it
// stops admitting; switching back to rendezvous keeps the sessions the
// other strategies placed. Without a gateway configured readiness has no flags entry.
func TestPlacementFollowsTheStrategyFlagAtEachTicket(t *testing.T) {
	iss := testenv.NewIssuer(t)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	kit.HTTPClient = iss.Server.Client()
	svc := NewService(kit, Config{ID: "mc-strategy", Region: "local", RedisAddr: rds.Addr(), JWKSURL: iss.JWKSURL(),
		Issuer: "https://ac-service", Audience: "meeting-controller", ClientSecret: envconf.NewSecret("x"),
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second, TicketTTL: time.Minute, TicketClients: []string{"signalling"}})
	defer svc.Close()
	svc.gcReg.Mark(time.Now())
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	defer api.Close()
	register := func(id string, utilization float64, admitting bool) wire.MHRegistration {
		t.Helper()
		mh := wire.MHRegistration{ID: id, MediaAddr: "10.0.0.1:443", Endpoint: "https://" + id, Utilization: utilization, Admitting: admitting}
		code, body, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+"/v1/media-handlers", iss.Token(t, "media-handler", "meeting-controller", "mh-*"), mh)
		if code != 200 {
			t.Fatalf("register %s = %d %s", id, code, body)
		}
		return mh
	}
	live := []wire.MHRegistration{register("mh-a", 0.5, true), register("mh-b", 0.1, true), register("mh-c", 0.3, true)}
	signalling := iss.Token(t, "signalling", "meeting-controller")
	ticket := func(session, participant string) string {
		t.Helper()
		code, body, _ := testenv.CallJSON(t, api.Client(), "POST", api.URL+"/v1/media-tickets", signalling,
			wire.MediaTicketRequest{SessionID: session, ParticipantID: participant})
		var mt wire.MediaTicket
		if code != 200 || json.Unmarshal(body, &mt) != nil {
			t.Fatalf("ticket %s/%s = %d %s", session, participant, code, body)
		}
		return mt.MediaHandler
	}
	rev := int64(0)
	setStrategy := func(v string) {
		rev++
		svc.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: rev,
			Flags: []flags.Entry{{Name: flags.McMhSelectionStrategy, Value: v, ModRevision: rev}}})
	}

	// The static default: rendezvous hashing, as before flags.
	if got := svc.flags.String(flags.McMhSelectionStrategy); got != StrategyRendezvous {
		t.Fatalf("static default %q, want rendezvous", got)
	}
	// Random session ids: FNV-1a without a finaliser spreads ids that
	// differ only in their last characters badly (hash-0, hash-1, …).
	hashed := make([]string, 30)
	for i := range hashed {
		hashed[i] = rand.Text()[:16]
	}
	used := map[string]bool{}
	for _, sid := range hashed {
		want, _ := placeSession(sid, live)
		if got := ticket(sid, "alice"); got != want.ID || ticket(sid, "bob") != got {
			t.Fatalf("session %s on %s, want %s for both participants (rendezvous)", sid, got, want.ID)
		}
		used[want.ID] = true
	}
	if len(used) < 2 {
		t.Fatalf("rendezvous used only %v over 30 sessions: the test cannot tell it from least-loaded", used)
	}
	var onA string // a session rendezvous put on mh-a, not the least loaded
	for _, sid := range hashed {
		if ticket(sid, "carol") == "mh-a" {
			onA = sid
			break
		}
	}
	if onA == "" {
		t.Fatal("no session on mh-a")
	}

	setStrategy(StrategyLeastLoaded)
	// Random ids: rendezvous hashing would spread them over the three.
	least := make([]string, 10)
	for i := range least {
		least[i] = rand.Text()[:16]
	}
	for _, sid := range least {
		if got := ticket(sid, "alice"); got != "mh-b" {
			t.Fatalf("least-loaded placed a new session on %s, want mh-b (utilisation 0.1)", got)
		}
	}
	if got := ticket(onA, "dave"); got != "mh-a" {
		t.Fatalf("a session placed before the switch moved to %s for its next participant", got)
	}

	setStrategy(StrategyRoundRobin)
	var turn []string
	for i := range 6 {
		sid := fmt.Sprint("rr-", i)
		turn = append(turn, ticket(sid, "alice"))
		if ticket(sid, "bob") != turn[i] {
			t.Fatalf("round-robin split session %s", sid)
		}
	}
	if fmt.Sprint(turn[:3]) != fmt.Sprint(turn[3:]) || turn[0] == turn[1] || turn[1] == turn[2] || turn[0] == turn[2] {
		t.Fatalf("round-robin placements %v, want the three MHs in turn", turn)
	}

	// Back to the default: the sessions placed meanwhile keep their MH.
	setStrategy(StrategyRendezvous)
	for i := range 6 {
		if sid := fmt.Sprint("rr-", i); ticket(sid, "carol") != turn[i] {
			t.Fatalf("switching back to rendezvous moved session %s", sid)
		}
	}
	// A pinned MH that stops admitting: the session goes elsewhere.
	setStrategy(StrategyLeastLoaded)
	register("mh-b", 0.95, false)
	if got := ticket(least[0], "erin"); got != "mh-c" {
		t.Fatalf("session on a non-admitting MH placed on %s, want mh-c (now the least loaded)", got)
	}
	rep := opskit.NewReadiness(prometheus.NewRegistry(), time.Second, svc.Checks()).Evaluate(context.Background())
	if _, listed := rep.Components["flags"]; listed {
		t.Fatalf("a flags entry in readiness with no gateway configured: %+v", rep)
	}
	if _, ok := rep.Components["redis"]; !ok || !rep.Components["redis"] {
		t.Fatalf("readiness = %+v", rep)
	}
}
