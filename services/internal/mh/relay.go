package mh

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/prometheus/client_golang/prometheus"
)

// Datagrams on the single multiplexed media port (docs/services.md has the
// full description). MH never decodes media payloads (they are end-to-end
// encrypted); it reads the 4-byte type and the header after it:
//
//	media     "DTM1" | session-id length (1 byte, 1..64) | session id | payload
//	join      "DTJ1" | ticket length (2 bytes, big-endian) | ticket | [cookie (16)]
//	challenge "DTC1" | cookie (16)          MH → participant, answers a join without a valid cookie
//	welcome   "DTW1"                        MH → participant, the source is enrolled
//
// Only an enrolled source address is forwarded for; everything else is
// dropped without a reply, except a join carrying a valid ticket, which
// gets a challenge (20 bytes, always smaller than the join) until it echoes
// the cookie bound to its source address.
var (
	magic          = []byte("DTM1")
	joinMagic      = []byte("DTJ1")
	challengeMagic = []byte("DTC1")
	welcomeMagic   = []byte("DTW1")
)

const (
	// MaxSessionIDLen bounds the session identifier.
	MaxSessionIDLen = 64
	// CookieLen is the length of the return-routability cookie.
	CookieLen = 16
	// cookieEpoch: a cookie is valid in its epoch and the next one.
	cookieEpoch = 30 * time.Second
	shards      = 64
)

// EncodeDatagram frames a media payload for a session (clients and tests).
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

// sessionBytes returns the session id of a media datagram without copying.
func sessionBytes(d []byte) ([]byte, bool) {
	if len(d) < len(magic)+2 || string(d[:len(magic)]) != string(magic) {
		return nil, false
	}
	n := int(d[len(magic)])
	if n == 0 || n > MaxSessionIDLen || len(d) < len(magic)+1+n {
		return nil, false
	}
	return d[len(magic)+1 : len(magic)+1+n], true
}

// SessionOf returns the session a media datagram belongs to.
func SessionOf(d []byte) (string, bool) {
	b, ok := sessionBytes(d)
	return string(b), ok
}

// EncodeJoin frames a join: the ticket MC issued and, on the second
// attempt, the cookie MH challenged with (nil on the first).
func EncodeJoin(ticket, cookie []byte) []byte {
	b := make([]byte, 0, len(joinMagic)+2+len(ticket)+len(cookie))
	b = append(b, joinMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ticket)))
	b = append(b, ticket...)
	return append(b, cookie...)
}

// parseJoin splits a join into ticket and cookie (nil when absent).
func parseJoin(d []byte) (ticket, cookie []byte, ok bool) {
	if len(d) < len(joinMagic)+2 || string(d[:len(joinMagic)]) != string(joinMagic) {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(d[len(joinMagic):]))
	rest := d[len(joinMagic)+2:]
	if n > len(rest) {
		return nil, nil, false
	}
	ticket, rest = rest[:n], rest[n:]
	switch len(rest) {
	case 0:
		return ticket, nil, true
	case CookieLen:
		return ticket, rest, true
	}
	return nil, nil, false
}

// ParseChallenge returns the cookie of a challenge (clients and tests).
func ParseChallenge(d []byte) ([]byte, bool) {
	if len(d) != len(challengeMagic)+CookieLen || string(d[:4]) != string(challengeMagic) {
		return nil, false
	}
	return d[4:], true
}

// IsWelcome reports whether d is MH's welcome (clients and tests).
func IsWelcome(d []byte) bool { return string(d) == string(welcomeMagic) }

// Limits bound what a relay holds and accepts.
type Limits struct {
	MaxDatagram       int     // MH_MAX_DATAGRAM: bigger datagrams are dropped
	MaxSessions       int     // MH_MAX_SESSIONS
	MaxParticipants   int     // MH_MAX_PARTICIPANTS (all sessions)
	MaxPerSession     int     // MH_MAX_PARTICIPANTS_PER_SESSION
	MaxPerSourceIP    int     // MH_MAX_PARTICIPANTS_PER_SOURCE: enrolled addresses per source IP
	SourceRatePPS     float64 // MH_SOURCE_RATE_PPS: datagrams per second per source IP (burst: 2 s worth)
	JoinRatePerSource float64 // MH_JOIN_RATE_PPS: joins per second per source IP (burst: 5 s worth, at least 5)
}

// DefaultLimits are the defaults of the MH_* variables.
var DefaultLimits = Limits{MaxDatagram: 1500, MaxSessions: 10000, MaxParticipants: 50000, MaxPerSession: 100,
	MaxPerSourceIP: 32, SourceRatePPS: 2000, JoinRatePerSource: 10}

// relayMetrics are bounded: no session IDs or addresses in labels.
type relayMetrics struct {
	datagrams    *prometheus.CounterVec
	latency      prometheus.Histogram
	sessions     prometheus.Gauge
	participants prometheus.Gauge
}

// Results of mh_datagrams_total (a fixed set).
const (
	resForwarded        = "forwarded"
	resMalformed        = "malformed"
	resOversize         = "oversize"
	resRateLimited      = "rate_limited"
	resUnadmitted       = "unadmitted"
	resBadTicket        = "bad_ticket"
	resChallenged       = "challenged"
	resBadCookie        = "bad_cookie"
	resJoined           = "joined"
	resRejectedCapacity = "rejected_capacity"
)

func newRelayMetrics(reg prometheus.Registerer) *relayMetrics {
	m := &relayMetrics{
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mh_datagrams_total",
			Help: "Datagrams received, by result (forwarded, malformed, oversize, rate_limited, unadmitted, bad_ticket, challenged, bad_cookie, joined, rejected_capacity).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mh_forwarding_latency_seconds",
			Help:    "Time from receiving a datagram to handing its last copy to the socket. ADR-0012 revisits CPU pinning if P99 > 30 ms.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .02, .03, .05, .1},
		}),
		sessions:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "mh_sessions", Help: "Active media sessions."}),
		participants: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mh_participants", Help: "Active participants across sessions."}),
	}
	for _, r := range []string{resForwarded, resMalformed, resOversize, resRateLimited, resUnadmitted, resBadTicket,
		resChallenged, resBadCookie, resJoined, resRejectedCapacity} {
		m.datagrams.WithLabelValues(r)
	}
	reg.MustRegister(m.datagrams, m.latency, m.sessions, m.participants)
	return m
}

// KeyRing holds the ticket keys MH learned from its MC registrations (one
// per MC it registered with; the most recently seen are kept).
type KeyRing struct {
	mu   sync.RWMutex
	keys []ringKey
}

type ringKey struct {
	key  mticket.Key
	seen time.Time
}

const maxRingKeys = 8

// Add records k as seen at now.
func (r *KeyRing) Add(k mticket.Key, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.keys {
		if r.keys[i].key.ID == k.ID {
			r.keys[i] = ringKey{k, now}
			return
		}
	}
	if len(r.keys) == maxRingKeys {
		oldest := 0
		for i := range r.keys {
			if r.keys[i].seen.Before(r.keys[oldest].seen) {
				oldest = i
			}
		}
		r.keys[oldest] = ringKey{k, now}
		return
	}
	r.keys = append(r.keys, ringKey{k, now})
}

// Get returns the key with id.
func (r *KeyRing) Get(id mticket.KeyID) (mticket.Key, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, k := range r.keys {
		if k.key.ID == id {
			return k.key, true
		}
	}
	return mticket.Key{}, false
}

// Len is the number of keys held.
func (r *KeyRing) Len() int { r.mu.RLock(); defer r.mu.RUnlock(); return len(r.keys) }

// rateTable is a fixed array of token buckets indexed by a keyed hash of
// the source IP: limiting costs no memory per source (sources that
// collide share a bucket). Used by the Serve goroutine only.
type rateTable struct {
	rate, burst float64
	seed        maphash.Seed
	b           [4096]struct {
		tokens float64
		last   int64
	}
}

func newRateTable(rate, burst float64) *rateTable {
	return &rateTable{rate: rate, burst: burst, seed: maphash.MakeSeed()}
}

func (t *rateTable) allow(a netip.Addr, now int64) bool {
	b := &t.b[maphash.Comparable(t.seed, a)%uint64(len(t.b))]
	if b.last == 0 {
		b.tokens = t.burst
	} else {
		b.tokens = min(t.burst, b.tokens+float64(now-b.last)/1e9*t.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type participant struct {
	addr     netip.AddrPort
	id       string
	sess     *session
	lastSeen atomic.Int64 // unix nanoseconds
}

// session's members are copy-on-write: the forwarding path loads the slice
// without a lock; it is replaced only under Relay.memberMu.
type session struct {
	id      string
	members atomic.Pointer[[]*participant]
}

func (s *session) list() []*participant {
	if s == nil {
		return nil
	}
	if p := s.members.Load(); p != nil {
		return *p
	}
	return nil
}

type partShard struct {
	mu   sync.RWMutex
	m    map[netip.AddrPort]*participant
	peak int
}

// Relay is the session-scoped passthrough: a datagram from an enrolled
// participant is sent unchanged to the other participants of its session.
// A source is enrolled only with a valid ticket from MC and after echoing
// the cookie bound to its address; at the bandwidth hard limit, and at the
// caps in Limits, new participants are refused; idle participants expire.
type Relay struct {
	conn    *net.UDPConn
	meter   *Meter
	idle    time.Duration
	id      string
	limits  Limits
	keys    *KeyRing
	newSess func() bool
	// thresholds: RelayConfig.Thresholds
	thresholds func() Thresholds
	metrics    *relayMetrics
	fault      mediaFault // RelayConfig.fault; its drop accumulator is the Serve goroutine's
	cookie     [32]byte
	seed       maphash.Seed

	// Serve goroutine only.
	rate, joinRate *rateTable

	parts [shards]partShard

	// memberMu serialises enrolment and removal (never taken by forwarding).
	memberMu     sync.Mutex
	sessions     map[string]*session
	perSource    map[netip.Addr]int
	sessPeak     int
	srcPeak      int
	nSessions    atomic.Int64
	nParticipant atomic.Int64
}

// RelayConfig is what a relay needs besides its socket.
type RelayConfig struct {
	ID     string // this MH's id: tickets must name it
	Idle   time.Duration
	Limits Limits
	Keys   *KeyRing
	// AdmitNewSessions, when set and false, refuses joins that would
	// open a session here (existing sessions keep flowing and take
	// rejoins): MH cannot reach its MC.
	AdmitNewSessions func() bool
	// Thresholds, when set, are the bandwidth thresholds in force (read
	// at each join: a flag change applies at once); nil: the ADR's.
	Thresholds func() Thresholds
	// fault degrades forwarding in a canaryfault test build (fault_on.go).
	fault mediaFault
}

func (r *Relay) currentThresholds() Thresholds {
	if r.thresholds == nil {
		return DefaultThresholds
	}
	return r.thresholds()
}

// NewRelay serves on conn.
func NewRelay(conn *net.UDPConn, meter *Meter, cfg RelayConfig, reg prometheus.Registerer) *Relay {
	r := &Relay{conn: conn, meter: meter, idle: cfg.Idle, id: cfg.ID, limits: cfg.Limits, keys: cfg.Keys, newSess: cfg.AdmitNewSessions, thresholds: cfg.Thresholds,
		metrics: newRelayMetrics(reg), fault: cfg.fault, seed: maphash.MakeSeed(),
		rate:     newRateTable(cfg.Limits.SourceRatePPS, 2*cfg.Limits.SourceRatePPS),
		joinRate: newRateTable(cfg.Limits.JoinRatePerSource, max(5, 5*cfg.Limits.JoinRatePerSource)),
		sessions: map[string]*session{}, perSource: map[netip.Addr]int{}}
	if _, err := rand.Read(r.cookie[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	for i := range r.parts {
		r.parts[i].m = map[netip.AddrPort]*participant{}
	}
	return r
}

func (r *Relay) shard(a netip.AddrPort) *partShard {
	return &r.parts[maphash.Comparable(r.seed, a)%shards]
}

func (r *Relay) lookup(a netip.AddrPort) *participant {
	sh := r.shard(a)
	sh.mu.RLock()
	p := sh.m[a]
	sh.mu.RUnlock()
	return p
}

// Serve reads until the socket is closed.
func (r *Relay) Serve() error {
	buf := make([]byte, r.limits.MaxDatagram+1)
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
		if n > r.limits.MaxDatagram {
			r.metrics.datagrams.WithLabelValues(resOversize).Inc()
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !r.rate.allow(from.Addr(), received.UnixNano()) {
			r.metrics.datagrams.WithLabelValues(resRateLimited).Inc()
			continue
		}
		d := buf[:n]
		switch {
		case len(d) >= 4 && string(d[:4]) == string(magic):
			peers = r.media(d, from, received, peers[:0])
		case len(d) >= 4 && string(d[:4]) == string(joinMagic):
			r.join(d, from, received)
		default:
			r.metrics.datagrams.WithLabelValues(resMalformed).Inc()
		}
	}
}

func (r *Relay) media(d []byte, from netip.AddrPort, received time.Time, peers []netip.AddrPort) []netip.AddrPort {
	sid, ok := sessionBytes(d)
	if !ok {
		r.metrics.datagrams.WithLabelValues(resMalformed).Inc()
		return peers
	}
	p := r.lookup(from)
	if p == nil || string(sid) != p.sess.id {
		// Not enrolled (or not in this session): no state, no reply.
		r.metrics.datagrams.WithLabelValues(resUnadmitted).Inc()
		return peers
	}
	p.lastSeen.Store(received.UnixNano())
	r.meter.Add(received, len(d))
	for _, m := range p.sess.list() {
		if m != p {
			peers = append(peers, m.addr)
		}
	}
	// A canaryfault build may drop or delay the datagram (fault_on.go);
	// either way it is counted as forwarded.
	drop := r.fault.drop()
	if wait := r.fault.wait(); wait > 0 {
		d, to := slices.Clone(d), slices.Clone(peers)
		time.AfterFunc(wait, func() { r.forward(d, to, received, drop) })
		return peers
	}
	r.forward(d, peers, received, drop)
	return peers
}

// forward sends d to peers (unless dropped) and counts it as forwarded.
func (r *Relay) forward(d []byte, peers []netip.AddrPort, received time.Time, drop bool) {
	if !drop {
		for _, a := range peers {
			if _, err := r.conn.WriteToUDPAddrPort(d, a); err == nil {
				r.meter.Add(received, len(d))
			}
		}
	}
	// Observed before counted: a count of n means n observations.
	r.metrics.latency.Observe(time.Since(received).Seconds())
	r.metrics.datagrams.WithLabelValues(resForwarded).Inc()
}

func (r *Relay) cookieFor(from netip.AddrPort, ticketMAC []byte, epoch int64) []byte {
	m := hmac.New(sha256.New, r.cookie[:])
	var b [8 + 16 + 2]byte
	binary.BigEndian.PutUint64(b[:8], uint64(epoch))
	a16 := from.Addr().As16()
	copy(b[8:24], a16[:])
	binary.BigEndian.PutUint16(b[24:], from.Port())
	m.Write(b[:])
	m.Write(ticketMAC)
	return m.Sum(nil)[:CookieLen]
}

func (r *Relay) join(d []byte, from netip.AddrPort, now time.Time) {
	raw, cookie, ok := parseJoin(d)
	if !ok {
		r.metrics.datagrams.WithLabelValues(resMalformed).Inc()
		return
	}
	t, err := mticket.Parse(raw)
	if err != nil {
		r.metrics.datagrams.WithLabelValues(resMalformed).Inc()
		return
	}
	key, known := r.keys.Get(t.KeyID)
	if string(t.MediaHandler) != r.id || !now.Before(t.Expiry) || !known || !t.Verify(key) {
		r.metrics.datagrams.WithLabelValues(resBadTicket).Inc()
		return
	}
	if !r.joinRate.allow(from.Addr(), now.UnixNano()) {
		r.metrics.datagrams.WithLabelValues(resRateLimited).Inc()
		return
	}
	epoch := now.UnixNano() / int64(cookieEpoch)
	if cookie == nil {
		// Return routability: the reply (20 bytes) is smaller than any
		// join, so a spoofed source gets less than was sent in its name.
		reply := append(append(make([]byte, 0, 4+CookieLen), challengeMagic...), r.cookieFor(from, t.MAC(), epoch)...)
		_, _ = r.conn.WriteToUDPAddrPort(reply, from)
		r.metrics.datagrams.WithLabelValues(resChallenged).Inc()
		return
	}
	if !hmac.Equal(cookie, r.cookieFor(from, t.MAC(), epoch)) && !hmac.Equal(cookie, r.cookieFor(from, t.MAC(), epoch-1)) {
		r.metrics.datagrams.WithLabelValues(resBadCookie).Inc()
		return
	}
	if !r.enroll(string(t.Session), string(t.Participant), from, now) {
		r.metrics.datagrams.WithLabelValues(resRejectedCapacity).Inc()
		return
	}
	_, _ = r.conn.WriteToUDPAddrPort(welcomeMagic, from)
	r.metrics.datagrams.WithLabelValues(resJoined).Inc()
}

// enroll makes from participant pid of session sid, within the limits.
func (r *Relay) enroll(sid, pid string, from netip.AddrPort, now time.Time) bool {
	r.memberMu.Lock()
	defer r.memberMu.Unlock()
	if p := r.lookup(from); p != nil {
		if p.sess.id == sid && p.id == pid {
			p.lastSeen.Store(now.UnixNano())
			return true
		}
		r.removeLocked(p) // the address moves to another session or identity
	}
	sess := r.sessions[sid]
	var replaced *participant // the same participant from a new address (NAT rebinding)
	for _, m := range sess.list() {
		if m.id == pid {
			replaced = m
		}
	}
	if replaced == nil {
		if !r.currentThresholds().Admits(r.meter.Utilization(now)) || int(r.nParticipant.Load()) >= r.limits.MaxParticipants ||
			len(sess.list()) >= r.limits.MaxPerSession || r.perSource[from.Addr()] >= r.limits.MaxPerSourceIP {
			return false
		}
		if sess == nil && (int(r.nSessions.Load()) >= r.limits.MaxSessions || (r.newSess != nil && !r.newSess())) {
			return false
		}
	} else {
		if r.perSource[from.Addr()] >= r.limits.MaxPerSourceIP && replaced.addr.Addr() != from.Addr() {
			return false
		}
		r.removeLocked(replaced)
		sess = r.sessions[sid] // removal may have dropped an emptied session
	}
	if sess == nil {
		sess = &session{id: sid}
		r.sessions[sid] = sess
		r.nSessions.Add(1)
		r.metrics.sessions.Inc()
	}
	p := &participant{addr: from, id: pid, sess: sess}
	p.lastSeen.Store(now.UnixNano())
	members := append(append([]*participant(nil), sess.list()...), p)
	sess.members.Store(&members)
	sh := r.shard(from)
	sh.mu.Lock()
	sh.m[from] = p
	sh.peak = max(sh.peak, len(sh.m))
	sh.mu.Unlock()
	r.perSource[from.Addr()]++
	r.sessPeak, r.srcPeak = max(r.sessPeak, len(r.sessions)), max(r.srcPeak, len(r.perSource))
	r.nParticipant.Add(1)
	r.metrics.participants.Inc()
	return true
}

// removeLocked drops p (memberMu held).
func (r *Relay) removeLocked(p *participant) {
	sh := r.shard(p.addr)
	sh.mu.Lock()
	if sh.m[p.addr] == p {
		delete(sh.m, p.addr)
		// Go maps do not shrink: rebuild a shard that emptied out after a
		// peak, so memory returns once participants leave.
		if sh.peak >= 256 && len(sh.m) < sh.peak/4 {
			sh.m, sh.peak = shrunk(sh.m), len(sh.m)
		}
	}
	sh.mu.Unlock()
	old := p.sess.list()
	members := make([]*participant, 0, len(old))
	for _, m := range old {
		if m != p {
			members = append(members, m)
		}
	}
	if len(members) == len(old) {
		return // already removed
	}
	p.sess.members.Store(&members)
	if n := r.perSource[p.addr.Addr()] - 1; n > 0 {
		r.perSource[p.addr.Addr()] = n
	} else {
		delete(r.perSource, p.addr.Addr())
	}
	r.nParticipant.Add(-1)
	r.metrics.participants.Dec()
	if len(members) == 0 && r.sessions[p.sess.id] == p.sess {
		delete(r.sessions, p.sess.id)
		r.nSessions.Add(-1)
		r.metrics.sessions.Dec()
	}
	if r.sessPeak >= 256 && len(r.sessions) < r.sessPeak/4 {
		r.sessions, r.sessPeak = shrunk(r.sessions), len(r.sessions)
	}
	if r.srcPeak >= 256 && len(r.perSource) < r.srcPeak/4 {
		r.perSource, r.srcPeak = shrunk(r.perSource), len(r.perSource)
	}
}

// shrunk copies m into a map sized for its current length (Go maps do not
// shrink on delete, and maps.Clone keeps the old size).
func shrunk[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// Expire drops participants idle for longer than the idle timeout and
// sessions left empty. It works one shard at a time: the forwarding path
// never waits for it (it takes no lock forwarding needs for longer than
// one shard's deletions).
func (r *Relay) Expire(now time.Time) {
	cutoff := now.Add(-r.idle).UnixNano()
	var idle []*participant
	for i := range r.parts {
		sh := &r.parts[i]
		idle = idle[:0]
		sh.mu.RLock()
		for _, p := range sh.m {
			if p.lastSeen.Load() < cutoff {
				idle = append(idle, p)
			}
		}
		sh.mu.RUnlock()
		if len(idle) == 0 {
			continue
		}
		r.memberMu.Lock()
		for _, p := range idle {
			if p.lastSeen.Load() < cutoff {
				r.removeLocked(p)
			}
		}
		r.memberMu.Unlock()
	}
}

// Counts returns the number of sessions and participants.
func (r *Relay) Counts() (sessions, participants int) {
	return int(r.nSessions.Load()), int(r.nParticipant.Load())
}
