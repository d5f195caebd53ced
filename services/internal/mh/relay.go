package mh

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Datagram format on the single multiplexed media port. MH never decodes the
// payload (media is end-to-end encrypted); it reads only the session header
// and forwards the datagram unchanged:
//
//	"DTM1" | session-id length (1 byte, 1..64) | session id | payload
var magic = []byte("DTM1")

// MaxSessionIDLen bounds the session identifier.
const MaxSessionIDLen = 64

// EncodeDatagram frames payload for a session (clients and tests).
func EncodeDatagram(sessionID string, payload []byte) ([]byte, error) {
	if len(sessionID) == 0 || len(sessionID) > MaxSessionIDLen {
		return nil, errors.New("session id must be 1..64 bytes")
	}
	b := make([]byte, 0, len(magic)+1+len(sessionID)+len(payload))
	b = append(b, magic...)
	b = append(b, byte(len(sessionID)))
	b = append(b, sessionID...)
	return append(b, payload...), nil
}

// SessionOf returns the session a datagram belongs to.
func SessionOf(d []byte) (string, bool) {
	if len(d) < len(magic)+2 || !bytes.Equal(d[:len(magic)], magic) {
		return "", false
	}
	n := int(d[len(magic)])
	if n == 0 || n > MaxSessionIDLen || len(d) < len(magic)+1+n {
		return "", false
	}
	return string(d[len(magic)+1 : len(magic)+1+n]), true
}

// relayMetrics are bounded: no session IDs or addresses in labels.
type relayMetrics struct {
	datagrams    *prometheus.CounterVec
	latency      prometheus.Histogram
	sessions     prometheus.Gauge
	participants prometheus.Gauge
}

func newRelayMetrics(reg prometheus.Registerer) *relayMetrics {
	m := &relayMetrics{
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mh_datagrams_total",
			Help: "Datagrams received, by result (forwarded, malformed, rejected_capacity).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mh_forwarding_latency_seconds",
			Help:    "Time from receiving a datagram to handing its last copy to the socket. ADR-0012 revisits CPU pinning if P99 > 30 ms.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .02, .03, .05, .1},
		}),
		sessions:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "mh_sessions", Help: "Active media sessions."}),
		participants: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mh_participants", Help: "Active participants across sessions."}),
	}
	reg.MustRegister(m.datagrams, m.latency, m.sessions, m.participants)
	return m
}

type participant struct{ lastSeen time.Time }

// Relay is the session-scoped passthrough: a datagram from a participant is
// sent unchanged to every other participant of its session. A source
// address joins a session with its first datagram; joins are refused at the
// bandwidth hard limit; idle participants expire.
type Relay struct {
	conn    *net.UDPConn
	meter   *Meter
	idle    time.Duration
	metrics *relayMetrics

	mu       sync.Mutex
	sessions map[string]map[netip.AddrPort]*participant
}

// NewRelay serves on conn.
func NewRelay(conn *net.UDPConn, meter *Meter, idle time.Duration, reg prometheus.Registerer) *Relay {
	return &Relay{conn: conn, meter: meter, idle: idle, metrics: newRelayMetrics(reg),
		sessions: map[string]map[netip.AddrPort]*participant{}}
}

// Serve reads until the socket is closed.
func (r *Relay) Serve() error {
	buf := make([]byte, 64<<10)
	var peers []netip.AddrPort
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		received := time.Now()
		d := buf[:n]
		sid, ok := SessionOf(d)
		if !ok {
			r.metrics.datagrams.WithLabelValues("malformed").Inc()
			continue
		}
		r.meter.Add(received, n)
		peers, ok = r.route(sid, from, received, peers[:0])
		if !ok {
			r.metrics.datagrams.WithLabelValues("rejected_capacity").Inc()
			continue
		}
		for _, p := range peers {
			if _, err := r.conn.WriteToUDPAddrPort(d, p); err == nil {
				r.meter.Add(received, n)
			}
		}
		r.metrics.datagrams.WithLabelValues("forwarded").Inc()
		r.metrics.latency.Observe(time.Since(received).Seconds())
	}
}

// route records from as a participant of sid (if admitted) and appends the
// session's other participants to peers.
func (r *Relay) route(sid string, from netip.AddrPort, now time.Time, peers []netip.AddrPort) ([]netip.AddrPort, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sess := r.sessions[sid]
	p := sess[from]
	if p == nil {
		if !AdmitsNewParticipants(r.meter.Utilization(now)) {
			return peers, false
		}
		if sess == nil {
			sess = map[netip.AddrPort]*participant{}
			r.sessions[sid] = sess
			r.metrics.sessions.Inc()
		}
		p = &participant{}
		sess[from] = p
		r.metrics.participants.Inc()
	}
	p.lastSeen = now
	for addr := range sess {
		if addr != from {
			peers = append(peers, addr)
		}
	}
	return peers, true
}

// Expire drops participants idle for longer than the idle timeout and
// sessions left empty.
func (r *Relay) Expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for sid, sess := range r.sessions {
		for addr, p := range sess {
			if now.Sub(p.lastSeen) > r.idle {
				delete(sess, addr)
				r.metrics.participants.Dec()
			}
		}
		if len(sess) == 0 {
			delete(r.sessions, sid)
			r.metrics.sessions.Dec()
		}
	}
}

// Counts returns the number of sessions and participants.
func (r *Relay) Counts() (sessions, participants int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		participants += len(s)
	}
	return len(r.sessions), participants
}
