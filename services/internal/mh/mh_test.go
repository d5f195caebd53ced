package mh

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

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

type peer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newPeer(t *testing.T) *peer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

func (p *peer) send(to net.Addr, sid, payload string) {
	d, _ := EncodeDatagram(sid, []byte(payload))
	if _, err := p.conn.WriteTo(d, to); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the payload of the next datagram, or "" when none arrives in
// the wait (a bound on a negative check, not a timing assertion).
func (p *peer) recv(wait time.Duration) string {
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := p.conn.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ""
	}
	if err != nil {
		p.t.Fatal(err)
	}
	sid, ok := SessionOf(buf[:n])
	if !ok {
		p.t.Fatalf("relay forwarded a malformed datagram %q", buf[:n])
	}
	return string(buf[len(magic)+1+len(sid) : n])
}

func startRelay(t *testing.T, capacityBits float64) (*Relay, net.Addr, *prometheus.Registry) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r := NewRelay(conn, NewMeter(capacityBits, 5*time.Second), time.Minute, reg)
	done := make(chan error, 1)
	go func() { done <- r.Serve() }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return r, conn.LocalAddr(), reg
}

func TestRelayForwardsWithinSessionOnly(t *testing.T) {
	r, addr, _ := startRelay(t, 1e9)
	alice, bob, carol, eve := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	alice.send(addr, "s1", "alice joins")
	bob.send(addr, "s1", "bob joins")
	if got := alice.recv(2 * time.Second); got != "bob joins" {
		t.Fatalf("alice got %q", got)
	}
	carol.send(addr, "s1", "carol joins")
	eve.send(addr, "other", "eve elsewhere")
	for _, p := range []*peer{alice, bob} {
		if got := p.recv(2 * time.Second); got != "carol joins" {
			t.Fatalf("got %q, want carol's datagram", got)
		}
	}
	alice.send(addr, "s1", "hello")
	if b, c := bob.recv(2*time.Second), carol.recv(2*time.Second); b != "hello" || c != "hello" {
		t.Fatalf("bob=%q carol=%q", b, c)
	}
	if got := eve.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("eve, in another session, received %q", got)
	}
	if got := alice.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("alice received her own datagram back: %q", got)
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
}

func TestRelayRejectsNewParticipantsAtHardLimit(t *testing.T) {
	// Capacity 1000 bit/s over 5 s: 500 bytes received is 80%.
	r, addr, _ := startRelay(t, 1000)
	alice, bob, late := newPeer(t), newPeer(t), newPeer(t)
	alice.send(addr, "s1", "a")
	bob.send(addr, "s1", "b")
	if got := alice.recv(2 * time.Second); got != "b" {
		t.Fatalf("alice got %q", got)
	}
	big := string(bytes.Repeat([]byte("x"), 600))
	alice.send(addr, "s1", big)
	if got := bob.recv(2 * time.Second); got != big {
		t.Fatal("existing participant's datagram not forwarded")
	}
	late.send(addr, "s1", "let me in")
	if got := alice.recv(300 * time.Millisecond); got != "" {
		t.Fatalf("a new participant was admitted above the hard limit: alice got %q", got)
	}
	bob.send(addr, "s1", "still here")
	if got := alice.recv(2 * time.Second); got != "still here" {
		t.Fatalf("existing participants stopped flowing above the limit: %q", got)
	}
	if got := late.recv(200 * time.Millisecond); got != "" {
		t.Fatalf("rejected participant received %q", got)
	}
	if v := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues("rejected_capacity")); v != 1 {
		t.Fatalf("rejected_capacity = %g", v)
	}
}
