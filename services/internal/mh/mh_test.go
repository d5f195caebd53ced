package mh

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAdmissionThresholds(t *testing.T) {
	for _, c := range []struct {
		u     float64
		state BandwidthState
		admit bool
	}{
		{0, StateNormal, true}, {0.69, StateNormal, true}, {0.70, StateWarning, true},
		{0.79, StateWarning, true}, {0.80, StateCritical, false}, {1.5, StateCritical, false},
	} {
		if s := StateFor(c.u); s != c.state {
			t.Errorf("StateFor(%g) = %s, want %s", c.u, s, c.state)
		}
		if a := AdmitsNewParticipants(c.u); a != c.admit {
			t.Errorf("AdmitsNewParticipants(%g) = %v", c.u, a)
		}
	}
}

func TestMeterSlidingWindow(t *testing.T) {
	m := NewMeter(8000, 2*time.Second) // 1000 bytes/s is 100%
	t0 := time.Unix(1000, 0)
	m.Add(t0, 1000)
	m.Add(t0.Add(500*time.Millisecond), 600)
	if u := m.Utilization(t0.Add(900 * time.Millisecond)); u != 0.8 { // 1600 B over a 2 s window
		t.Fatalf("utilization = %g, want 0.8", u)
	}
	if u := m.Utilization(t0.Add(1500 * time.Millisecond)); u != 0.8 {
		t.Fatalf("utilization one second later = %g, want 0.8", u)
	}
	if u := m.Utilization(t0.Add(2 * time.Second)); u != 0 {
		t.Fatalf("utilization after the window = %g, want 0", u)
	}
	m.Add(t0.Add(3*time.Second), 100) // reuses the ring slot of t0+1s
	if u := m.Utilization(t0.Add(3 * time.Second)); u != 0.05 {
		t.Fatalf("utilization after slot reuse = %g, want 0.05", u)
	}
}

func TestDatagramFraming(t *testing.T) {
	d, err := EncodeDatagram("meeting-42", []byte("opaque-srtp"))
	if err != nil {
		t.Fatal(err)
	}
	if sid, ok := SessionOf(d); !ok || sid != "meeting-42" {
		t.Fatalf("SessionOf = %q %v", sid, ok)
	}
	for name, b := range map[string][]byte{
		"empty": nil, "wrong magic": []byte("XXXX\x01a"), "zero length": []byte("DTM1\x00"),
		"truncated id": []byte("DTM1\x05ab"), "too long": append([]byte("DTM1\x41"), bytes.Repeat([]byte("a"), 65)...),
	} {
		if _, ok := SessionOf(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := EncodeDatagram("", nil); err == nil {
		t.Error("empty session id accepted")
	}
}

func FuzzSessionOf(f *testing.F) {
	f.Add([]byte("DTM1\x03abcpayload"))
	f.Add([]byte("DTM1\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sid, ok := SessionOf(b)
		if !ok {
			return
		}
		re, err := EncodeDatagram(sid, b[len(magic)+1+len(sid):])
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("parsed %q from %q but re-encoding gives %q (%v)", sid, b, re, err)
		}
	})
}

const testMH = "mh-test"

type peer struct {
	t    *testing.T
	conn *net.UDPConn
	in   atomic.Int64 // bytes this peer sent to the relay
	out  atomic.Int64 // bytes the relay sent to this peer
}

// newPeerOn binds a socket on a loopback address (all of 127/8 is local
// on Linux): distinct source IPs for the per-source limits.
func newPeerOn(t *testing.T, ip string) *peer {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

func newPeer(t *testing.T) *peer { return newPeerOn(t, "127.0.0.1") }

func (p *peer) raw(to net.Addr, d []byte) {
	if _, err := p.conn.WriteTo(d, to); err != nil {
		p.t.Fatal(err)
	}
	p.in.Add(int64(len(d)))
}

func (p *peer) send(to net.Addr, sid, payload string) {
	d, _ := EncodeDatagram(sid, []byte(payload))
	p.raw(to, d)
}

// next returns the next datagram, or nil when none arrives in the wait (a
// bound on a negative check, not a timing assertion).
func (p *peer) next(wait time.Duration) []byte {
	buf := make([]byte, 70000)
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := p.conn.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.out.Add(int64(n))
	return buf[:n]
}

// recv returns the payload of the next media datagram, or "" when none
// arrives in the wait.
func (p *peer) recv(wait time.Duration) string {
	d := p.next(wait)
	if d == nil {
		return ""
	}
	sid, ok := SessionOf(d)
	if !ok {
		p.t.Fatalf("relay sent a datagram that is not media: %q", d)
	}
	return string(d[len(magic)+1+len(sid):])
}

// join runs the two-step join and reports whether MH welcomed the peer.
func (p *peer) join(to net.Addr, ticket []byte) bool {
	p.raw(to, EncodeJoin(ticket, nil))
	cookie, ok := ParseChallenge(p.next(2 * time.Second))
	if !ok {
		return false
	}
	p.raw(to, EncodeJoin(ticket, cookie))
	return IsWelcome(p.next(time.Second))
}

func (p *peer) mustJoin(to net.Addr, ticket []byte) {
	p.t.Helper()
	if !p.join(to, ticket) {
		p.t.Fatal("a valid join was not welcomed")
	}
}

type testRelay struct {
	*Relay
	addr net.Addr
	key  mticket.Key
}

func (r *testRelay) ticket(t *testing.T, sid, pid string) []byte {
	b, err := mticket.Issue(r.key, testMH, sid, pid, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startRelay(t *testing.T, capacityBits float64, limits Limits) *testRelay {
	return startRelayWith(t, capacityBits, RelayConfig{Limits: limits}, prometheus.NewRegistry())
}

// startRelayWith serves a relay with cfg (its ID, Idle and Keys filled in)
// whose metrics go to reg.
func startRelayWith(t *testing.T, capacityBits float64, cfg RelayConfig, reg prometheus.Registerer) *testRelay {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key, err := mticket.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ring := &KeyRing{}
	ring.Add(key, time.Now())
	cfg.ID, cfg.Idle, cfg.Keys = testMH, time.Minute, ring
	r := NewRelay(conn, NewMeter(capacityBits, 5*time.Second), cfg, reg)
	done := make(chan error, 1)
	go func() { done <- r.Serve() }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return &testRelay{Relay: r, addr: conn.LocalAddr(), key: key}
}

func TestTicketRoundTripAndForgery(t *testing.T) {
	k, _ := mticket.NewKey()
	other, _ := mticket.NewKey()
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	b, err := mticket.Issue(k, "mh-1", "s1", "alice", exp)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := mticket.Parse(b)
	if err != nil || !tk.Verify(k) || string(tk.Session) != "s1" || string(tk.Participant) != "alice" ||
		string(tk.MediaHandler) != "mh-1" || !tk.Expiry.Equal(exp) {
		t.Fatalf("parse = %+v %v", tk, err)
	}
	if tk.Verify(other) {
		t.Fatal("verified under another key")
	}
	other.ID = k.ID
	if tk.Verify(other) {
		t.Fatal("verified under another secret with the same key id")
	}
	for i := 4; i < len(b); i++ { // every byte after the magic is authenticated
		c := slices.Clone(b)
		c[i] ^= 1
		if tk, err := mticket.Parse(c); err == nil && tk.Verify(k) {
			t.Fatalf("flipping byte %d still verifies", i)
		}
	}
	kid, sec := k.Encode()
	if k2, err := mticket.DecodeKey(kid, sec); err != nil || k2 != k {
		t.Fatal("key encoding does not round-trip")
	}
}

func TestRelayForwardsWithinSessionOnly(t *testing.T) {
	r := startRelay(t, 1e9, DefaultLimits)
	alice, bob, carol, eve := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	bob.send(r.addr, "s1", "bob here")
	if got := alice.recv(2 * time.Second); got != "bob here" {
		t.Fatalf("alice got %q", got)
	}
	carol.mustJoin(r.addr, r.ticket(t, "s1", "carol"))
	eve.mustJoin(r.addr, r.ticket(t, "other", "eve"))
	eve.send(r.addr, "other", "eve elsewhere")
	alice.send(r.addr, "s1", "hello")
	if b, c := bob.recv(2*time.Second), carol.recv(2*time.Second); b != "hello" || c != "hello" {
		t.Fatalf("bob=%q carol=%q", b, c)
	}
	// An enrolled source cannot inject into a session it did not join.
	eve.send(r.addr, "s1", "eve injects")
	for _, p := range []*peer{alice, bob, carol} {
		if got := p.recv(200 * time.Millisecond); got != "" {
			t.Fatalf("a participant of s1 received %q", got)
		}
	}
	if got := eve.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("eve, in another session, received %q", got)
	}
	if s, p := r.Counts(); s != 2 || p != 4 {
		t.Fatalf("sessions=%d participants=%d", s, p)
	}
	r.Expire(time.Now().Add(2 * time.Minute))
	if s, p := r.Counts(); s != 0 || p != 0 {
		t.Fatalf("after idle expiry sessions=%d participants=%d", s, p)
	}
	if v := testutil.ToFloat64(r.metrics.participants); v != 0 {
		t.Fatalf("mh_participants = %g after expiry", v)
	}
	if n := testutil.CollectAndCount(r.metrics.latency); n != 1 {
		t.Fatalf("latency histogram not collected")
	}
	// After expiry the address is a stranger again.
	alice.send(r.addr, "s1", "still there?")
	if got := bob.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("an expired participant was forwarded: %q", got)
	}
}

func TestRelayRejectsNewParticipantsAtHardLimit(t *testing.T) {
	// Capacity 1000 bit/s over 5 s: 500 bytes received is 80%.
	r := startRelay(t, 1000, DefaultLimits)
	alice, bob, late := newPeer(t), newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	big := string(bytes.Repeat([]byte("x"), 600))
	alice.send(r.addr, "s1", big)
	if got := bob.recv(2 * time.Second); got != big {
		t.Fatal("existing participant's datagram not forwarded")
	}
	if late.join(r.addr, r.ticket(t, "s1", "late")) {
		t.Fatal("a new participant was admitted above the hard limit")
	}
	bob.send(r.addr, "s1", "still here")
	if got := alice.recv(2 * time.Second); got != "still here" {
		t.Fatalf("existing participants stopped flowing above the limit: %q", got)
	}
	late.send(r.addr, "s1", "let me in")
	if got := alice.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("rejected participant injected %q", got)
	}
	if v := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(resRejectedCapacity)); v != 1 {
		t.Fatalf("rejected_capacity = %g", v)
	}
}

// The fixed behaviour for finding 1: a source without a valid ticket and a
// cookie bound to its address receives nothing and injects nothing.
func TestUnadmittedSourceReceivesNothingAndInjectsNothing(t *testing.T) {
	r := startRelay(t, 1e9, DefaultLimits)
	alice, bob, eve, mallory := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))

	forged, _ := mticket.NewKey()
	forged.ID = r.key.ID
	forgedTicket, _ := mticket.Issue(forged, testMH, "s1", "eve", time.Now().Add(time.Minute))
	expired, _ := mticket.Issue(r.key, testMH, "s1", "eve", time.Now().Add(-time.Second))
	otherMH, _ := mticket.Issue(r.key, "mh-other", "s1", "eve", time.Now().Add(time.Minute))
	eve.send(r.addr, "s1", "eve injects without joining")
	for _, tk := range [][]byte{forgedTicket, expired, otherMH, []byte("DTT1 garbage")} {
		eve.raw(r.addr, EncodeJoin(tk, nil))
		eve.raw(r.addr, EncodeJoin(tk, make([]byte, CookieLen)))
	}
	eve.send(r.addr, "s1", "eve injects after bad joins")
	// Return routability: mallory's cookie is bound to mallory's address;
	// eve presenting it (as a spoofer would have to) is refused.
	good := r.ticket(t, "s1", "eve")
	mallory.raw(r.addr, EncodeJoin(good, nil))
	cookie, ok := ParseChallenge(mallory.next(2 * time.Second))
	if !ok {
		t.Fatal("no challenge for a valid ticket")
	}
	eve.raw(r.addr, EncodeJoin(good, cookie))
	eve.send(r.addr, "s1", "eve injects with a stolen cookie")
	if d := eve.next(300 * time.Millisecond); d != nil {
		t.Fatalf("eve received %q", d)
	}
	for _, p := range []*peer{alice, bob} {
		if got := p.recv(200 * time.Millisecond); got != "" {
			t.Fatalf("an unadmitted source injected %q", got)
		}
	}
	alice.send(r.addr, "s1", "alice talks")
	if got := bob.recv(2 * time.Second); got != "alice talks" {
		t.Fatalf("admitted participants stopped relaying: %q", got)
	}
	if d := eve.next(200 * time.Millisecond); d != nil {
		t.Fatalf("eve received %q", d)
	}
	if s, p := r.Counts(); s != 1 || p != 2 {
		t.Fatalf("sessions=%d participants=%d", s, p)
	}
	for res, want := range map[string]float64{resUnadmitted: 3, resBadTicket: 6, resMalformed: 2, resBadCookie: 1} {
		if v := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(res)); v != want {
			t.Errorf("%s = %g, want %g", res, v, want)
		}
	}
}

// Finding 1's amplifier: whatever an unadmitted sender sends, it gets back
// at most as many bytes as it sent, while admitted participants exchange
// maximum-size datagrams in the same session.
func TestAmplificationFactorForUnadmittedSenders(t *testing.T) {
	r := startRelay(t, 1e9, DefaultLimits)
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	stolen := r.ticket(t, "s1", "stolen") // a leaked ticket: the worst case
	attackers := make([]*peer, 40)
	for i := range attackers {
		attackers[i] = newPeerOn(t, fmt.Sprintf("127.0.1.%d", i+1))
	}
	full := bytes.Repeat([]byte("m"), DefaultLimits.MaxDatagram-len("DTM1")-1-len("s1"))
	var wg sync.WaitGroup
	for i, a := range attackers {
		wg.Go(func() {
			if i%2 == 1 { // only what earns a reply: joins with a valid ticket
				for range 20 {
					a.raw(r.addr, EncodeJoin(stolen, nil))
				}
				return
			}
			for range 5 {
				a.send(r.addr, "s1", "join by media") // the old way in: one datagram with the id
				a.raw(r.addr, EncodeJoin(stolen, nil))
				a.raw(r.addr, EncodeJoin(stolen, make([]byte, CookieLen)))
				a.raw(r.addr, bytes.Repeat([]byte("x"), 65000))
			}
		})
	}
	wg.Wait()
	// The flood may still fill the relay's socket buffer (the kernel then
	// drops what arrives, alice's datagrams too): each frame is resent
	// until it gets through, as media would be.
	for i := range 10 {
		frame := fmt.Sprint(i, string(full[len(fmt.Sprint(i)):]))
		got := ""
		for attempt := 0; attempt < 10 && got != frame; attempt++ {
			alice.send(r.addr, "s1", frame)
			for got = bob.recv(500 * time.Millisecond); got != "" && got != frame; got = bob.recv(500 * time.Millisecond) {
			}
		}
		if got != frame {
			t.Fatal("admitted participants stopped relaying")
		}
	}
	worst := 0.0
	var totalIn, totalOut int64
	for _, a := range attackers {
		for a.next(50*time.Millisecond) != nil {
		}
		in, out := a.in.Load(), a.out.Load()
		totalIn, totalOut = totalIn+in, totalOut+out
		worst = max(worst, float64(out)/float64(in))
	}
	t.Logf("FIGURE amplification: %d unadmitted senders (half sending only valid-ticket joins) sent %d B (oversize datagrams included), received %d B; worst per-sender factor %.4f (limit 1); total %.4f; a challenge answers a %d-byte join with %d bytes (%.2f)",
		len(attackers), totalIn, totalOut, worst, float64(totalOut)/float64(totalIn),
		len(EncodeJoin(stolen, nil)), 4+CookieLen, float64(4+CookieLen)/float64(len(EncodeJoin(stolen, nil))))
	if worst > 1 {
		t.Fatalf("an unadmitted sender received %.3f× what it sent", worst)
	}
	// A challenge is the only answer an unadmitted sender can get: it is
	// smaller than the smallest join that earns one.
	if ratio := float64(4+CookieLen) / float64(len(EncodeJoin(make([]byte, mticket.MinLen), nil))); ratio >= 1 {
		t.Fatalf("challenge/join = %.3f", ratio)
	}
	if s, p := r.Counts(); s != 1 || p != 2 {
		t.Fatalf("sessions=%d participants=%d", s, p)
	}
}

func TestOversizeDatagramsAreDropped(t *testing.T) {
	r := startRelay(t, 1e9, DefaultLimits)
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	header := len("DTM1") + 1 + len("s1")
	for _, size := range []int{DefaultLimits.MaxDatagram + 1, 9000, 65000} {
		alice.send(r.addr, "s1", string(bytes.Repeat([]byte("o"), size-header)))
	}
	fits := string(bytes.Repeat([]byte("f"), DefaultLimits.MaxDatagram-header))
	alice.send(r.addr, "s1", fits)
	if got := bob.recv(2 * time.Second); got != fits {
		t.Fatalf("first datagram bob got has %d bytes, want the %d-byte one that fits", len(got), len(fits))
	}
	if v := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(resOversize)); v != 3 {
		t.Fatalf("oversize = %g", v)
	}
}

func TestCapsPerSessionSourceAndGlobal(t *testing.T) {
	lim := DefaultLimits
	lim.MaxPerSession, lim.MaxPerSourceIP, lim.MaxSessions, lim.MaxParticipants = 3, 2, 2, 5
	r := startRelay(t, 1e9, lim)
	var ok []bool
	// Per session: a fourth participant is refused.
	for i := range 4 {
		ok = append(ok, newPeerOn(t, fmt.Sprintf("127.0.2.%d", i+1)).join(r.addr, r.ticket(t, "s1", fmt.Sprint("p", i))))
	}
	if !slices.Equal(ok, []bool{true, true, true, false}) {
		t.Fatalf("per-session cap: joins %v", ok)
	}
	// Per source IP: a third address on one IP is refused.
	a, b, c := newPeerOn(t, "127.0.3.1"), newPeerOn(t, "127.0.3.1"), newPeerOn(t, "127.0.3.1")
	if !a.join(r.addr, r.ticket(t, "s2", "a")) || !b.join(r.addr, r.ticket(t, "s2", "b")) || c.join(r.addr, r.ticket(t, "s2", "c")) {
		t.Fatal("per-source cap not applied")
	}
	// Globally: 5 participants, 2 sessions.
	if newPeerOn(t, "127.0.4.1").join(r.addr, r.ticket(t, "s3", "x")) {
		t.Fatal("a third session was created over MaxSessions")
	}
	if s, p := r.Counts(); s != 2 || p != 5 {
		t.Fatalf("sessions=%d participants=%d", s, p)
	}
	// The same participant from a new address replaces its old one (NAT
	// rebinding) without counting twice.
	if !newPeerOn(t, "127.0.2.9").join(r.addr, r.ticket(t, "s1", "p0")) {
		t.Fatal("rebinding refused")
	}
	if s, p := r.Counts(); s != 2 || p != 5 {
		t.Fatalf("after rebinding sessions=%d participants=%d", s, p)
	}
}

func TestPerSourceRateLimit(t *testing.T) {
	lim := DefaultLimits
	lim.SourceRatePPS = 50 // burst 100
	r := startRelay(t, 1e9, lim)
	alice, bob := newPeer(t), newPeerOn(t, "127.0.5.1")
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	start := time.Now()
	for i := range 400 {
		alice.send(r.addr, "s1", fmt.Sprint(i))
	}
	took := time.Since(start)
	got := 0
	for bob.recv(300*time.Millisecond) != "" {
		got++
	}
	// At most the burst plus what the rate refills while sending (and
	// while the relay works through its socket buffer).
	allowed := 100 + int(50*(took+300*time.Millisecond).Seconds()) + 2
	t.Logf("FIGURE per-source rate limit: 400 datagrams sent in %s, %d forwarded (limit 50/s, burst 100: at most %d)", took.Round(time.Millisecond), got, allowed)
	if got < 50 || got > allowed {
		t.Fatalf("forwarded %d of 400 datagrams sent in a burst, want 50..%d", got, allowed)
	}
}

// relayProbe measures relay latency for an admitted pair: alice stamps
// each datagram, bob reads them; it returns the p99 and the count.
func relayProbe(t *testing.T, r *testRelay, alice, bob *peer, stop <-chan struct{}) (p99 time.Duration, n int) {
	var lat []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_ = bob.conn.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := bob.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if sid, ok := SessionOf(buf[:k]); ok && k >= len("DTM1")+1+len(sid)+8 {
				sent := int64(binary.BigEndian.Uint64(buf[len("DTM1")+1+len(sid):]))
				lat = append(lat, time.Duration(time.Now().UnixNano()-sent))
			}
		}
	}()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	payload := make([]byte, 8)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
			binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
			alice.send(r.addr, "s1", string(payload))
		}
	}
	<-done
	if len(lat) == 0 {
		t.Fatal("no datagram relayed")
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], len(lat)
}

func heapMiB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// Finding 2: a flood of random session ids and forged joins allocates no
// state, leaves memory within a bound and keeps relaying under 30 ms p99.
func TestRandomIDFloodLeavesStateAndLatencyBounded(t *testing.T) {
	lim := DefaultLimits
	lim.SourceRatePPS = 1e7 // let the whole flood reach the parser (the worst case)
	r := startRelay(t, 1e12, lim)
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	// A p99 over 30 ms is retried once: the machine's CPUs are shared
	// (other test packages, other builds) and a scheduling stall of the
	// test process shows up as relay latency. The old relay (one lock,
	// expiry scanning all sessions under it) measured 147 ms every time.
	for attempt := 1; ; attempt++ {
		p99 := randomIDFlood(t, r, alice, bob)
		if p99 <= 30*time.Millisecond {
			return
		}
		if attempt == 2 {
			t.Fatalf("relay p99 %s during the flood (twice), ADR limit 30 ms", p99)
		}
		t.Logf("relay p99 %s during the flood; measuring again", p99)
	}
}

// randomIDFlood runs the issue's flood against r while alice and bob
// relay, with expiry every second as the service runs it; it checks that
// no state was created and memory stayed bounded, and returns the relay p99.
func randomIDFlood(t *testing.T, r *testRelay, alice, bob *peer) time.Duration {
	before := heapMiB()
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	const total, senders = 300_000, 4
	start := time.Now()
	// The issue's flood: 300k 70-byte datagrams over about 7.5 s; half
	// media with random session ids, half joins with forged tickets (a
	// known key id, so each costs MH an HMAC). Precomputed, paced.
	flood := make([][]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range flood {
		if i%2 == 0 {
			d := make([]byte, 70)
			copy(d, "DTM1")
			d[4] = 32
			for j := 5; j < 37; j++ {
				d[j] = 'a' + byte(rng.IntN(26))
			}
			flood[i] = d
		} else {
			k, _ := mticket.NewKey()
			k.ID = r.key.ID
			tk, _ := mticket.Issue(k, testMH, fmt.Sprintf("%016x", rng.Uint64()), "p", time.Now().Add(time.Minute))
			flood[i] = EncodeJoin(tk, nil)
		}
	}
	const perSecond = total / 7.5
	for i := range senders {
		wg.Go(func() {
			c := newPeerOn(t, fmt.Sprintf("127.0.6.%d", i+1))
			rr := rand.New(rand.NewPCG(uint64(i), 9))
			for k := 0; k < total/senders && time.Since(start) < 20*time.Second; k++ {
				d := flood[(k*senders+i)%len(flood)] // this sender's own slots: no sharing
				if d[3] == '1' && string(d[:4]) == "DTM1" {
					for j := 5; j < 13; j++ { // a fresh random session id each time
						d[j] = 'a' + byte(rr.IntN(26))
					}
				}
				c.raw(r.addr, d)
				sent.Add(1)
				if k%100 == 99 { // pace: each sender is 1/senders of the rate
					due := start.Add(time.Duration(float64(k+1) * senders / perSecond * float64(time.Second)))
					time.Sleep(time.Until(due))
				}
			}
		})
	}
	go func() { wg.Wait(); close(stop) }()
	expired := make(chan struct{})
	go func() { // the service's expiry tick
		defer close(expired)
		tick := time.NewTicker(time.Second)
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
	p99, n := relayProbe(t, r, alice, bob, stop)
	<-expired
	elapsed := time.Since(start)
	after := heapMiB()
	s, p := r.Counts()
	t.Logf("FIGURE random-id flood: %d datagrams in %s; sessions %d, participants %d; heap %.1f → %.1f MiB; relay p99 %s over %d probes",
		sent.Load(), elapsed.Round(time.Millisecond), s, p, before, after, p99, n)
	if s != 1 || p != 2 {
		t.Fatalf("the flood created state: sessions=%d participants=%d", s, p)
	}
	if after-before > 8 {
		t.Fatalf("heap grew %.1f MiB during the flood", after-before)
	}
	return p99
}

// Expiry of many participants runs shard by shard and does not stall
// forwarding; memory returns after the participants leave.
func TestMassExpiryKeepsRelayingAndReturnsMemory(t *testing.T) {
	lim := DefaultLimits
	lim.MaxParticipants, lim.MaxSessions, lim.MaxPerSourceIP = 200_000, 100_000, 200_000
	r := startRelay(t, 1e12, lim)
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	base := heapMiB()
	const n = 100_000
	old := time.Now().Add(-2 * time.Minute)
	for i := range n {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5000)
		if !r.enroll(fmt.Sprintf("bulk-%d", i/4), fmt.Sprint("p", i%4), a, old) {
			t.Fatalf("enrolling %d failed", i)
		}
	}
	full := heapMiB()
	stop := make(chan struct{})
	var expiry time.Duration
	go func() {
		time.Sleep(200 * time.Millisecond)
		t0 := time.Now()
		r.Expire(time.Now())
		expiry = time.Since(t0)
		time.Sleep(200 * time.Millisecond)
		close(stop)
	}()
	p99, probes := relayProbe(t, r, alice, bob, stop)
	after := heapMiB()
	s, p := r.Counts()
	t.Logf("FIGURE mass expiry: %d participants in %d sessions expired in %s; relay p99 %s over %d probes; heap %.1f → %.1f → %.1f MiB",
		n, n/4, expiry.Round(time.Millisecond), p99, probes, base, full, after)
	if s != 1 || p != 2 {
		t.Fatalf("after expiry sessions=%d participants=%d", s, p)
	}
	if p99 > 30*time.Millisecond {
		t.Fatalf("relay p99 %s during expiry", p99)
	}
	if after-base > 4 {
		t.Fatalf("heap did not return: %.1f MiB above baseline", after-base)
	}
}

// Graceful degradation: without a current MC registration MH refuses to
// open new sessions but keeps relaying (and taking rejoins into) the ones
// it has.
func TestLostMCStopsNewSessionsButKeepsRelaying(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mticket.NewKey()
	ring := &KeyRing{}
	ring.Add(key, time.Now())
	var mcUp atomic.Bool
	mcUp.Store(true)
	relay := NewRelay(conn, NewMeter(1e9, 5*time.Second), RelayConfig{ID: testMH, Idle: time.Minute, Limits: DefaultLimits,
		Keys: ring, AdmitNewSessions: mcUp.Load}, prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- relay.Serve() }()
	t.Cleanup(func() { conn.Close(); <-done })
	r := &testRelay{Relay: relay, addr: conn.LocalAddr(), key: key}
	alice, bob, carol, dave := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "live", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "live", "bob"))
	mcUp.Store(false) // MC (or GC, or the database behind it) is gone
	if dave.join(r.addr, r.ticket(t, "new", "dave")) {
		t.Fatal("a new session was opened without a current MC registration")
	}
	carol.mustJoin(r.addr, r.ticket(t, "live", "carol")) // into a live session: still fine
	for i := range 20 {
		alice.send(r.addr, "live", fmt.Sprint("frame ", i))
		if b, c := bob.recv(2*time.Second), carol.recv(2*time.Second); b != fmt.Sprint("frame ", i) || c != b {
			t.Fatalf("live session stopped relaying: bob %q carol %q", b, c)
		}
	}
	mcUp.Store(true)
	dave.mustJoin(r.addr, r.ticket(t, "new", "dave"))
}

func TestReadinessSurvivesMCLossAfterFirstRegistration(t *testing.T) {
	kit, _ := testenv.Kit(t, "media-handler", "")
	s := NewService(kit, Config{ID: testMH, HeartbeatInterval: 100 * time.Millisecond, CapacityMbps: 1000, MeterWindow: time.Second,
		IdleTimeout: time.Minute, Limits: DefaultLimits, ClientSecret: envconf.NewSecret("x")})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s.relay = NewRelay(conn, s.meter, RelayConfig{ID: testMH, Idle: time.Minute, Limits: DefaultLimits, Keys: s.keys,
		AdmitNewSessions: s.mcFresh}, prometheus.NewRegistry())
	rdy := opskit.NewReadiness(prometheus.NewRegistry(), time.Second, s.Checks())
	if rep := rdy.Evaluate(context.Background()); rep.Ready {
		t.Fatalf("ready before any MC registration: %+v", rep)
	}
	key, _ := mticket.NewKey()
	s.keys.Add(key, time.Now())
	s.mcReg.Mark(time.Now())
	if rep := rdy.Evaluate(context.Background()); !rep.Ready || !rep.Components["mc_heartbeat"] || !s.mcFresh() {
		t.Fatalf("not ready after registering: %+v", rep)
	}
	s.mcReg.Mark(time.Now().Add(-time.Second)) // ten intervals without MC
	rep := rdy.Evaluate(context.Background())
	if !rep.Ready || rep.Components["mc_heartbeat"] || s.mcFresh() {
		t.Fatalf("MC lost: %+v (want ready, mc_heartbeat unhealthy, not admitting)", rep)
	}
}
