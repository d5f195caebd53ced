package smoke

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Load is the smoke client as a steady load (SMOKE_MODE=load): the traffic
// the chaos stage's error budget and media probes are judged on, from
// Prometheus. Every Interval each of its Workers makes one client's round
// of API calls — global-controller's registry and a media ticket from
// meeting-controller, with the tokens it holds (one pair, shared), as a
// service does — and every TokenEvery rounds' time
// it asks ac-service for fresh tokens (well within ac-service's per-source
// token rate, which a token per call would exceed: by design, it throttles
// a client that does not cache its tokens). Each call's outcome is counted
// in darktower_load_requests_total{target,outcome}; and, unless Media is
// off (the canary proof's load, SMOKE_LOAD_MEDIA=false), it keeps
// MediaSessions media sessions of two participants each, each on the
// media-handler meeting-controller placed it on, relaying a datagram each
// way per Interval (darktower_load_datagrams_total{media_handler,outcome}:
// the loss per media-handler a canary of it is judged on). After three
// lost datagrams in a row a session is joined again with new tickets
// (darktower_load_media_rejoins_total): the media-handler it was on is
// gone. With a MediaLifetime, a session is closed after it and a new one
// (a new session id, placed anew) joined, so that a newly registered
// media-handler receives its share of sessions.
//
// OnDemand, the media sessions run only while the load is Active, like the
// API rounds: none is opened before a start, and each is closed (its
// participants leave) at its first Interval after the start runs out.
type Load struct {
	Config
	Interval   time.Duration
	TokenEvery int  // rounds between fresh tokens
	Workers    int  // rounds made at once, each every Interval (default 1)
	Media      bool // keep the media sessions (default true)
	// MediaSessions is how many media sessions are kept at once, each in
	// a goroutine of its own (default 1).
	MediaSessions int
	// MediaLifetime, if above 0, is how long a media session lives before
	// it is closed and a new one joined; the sessions' first lifetimes
	// are random in [0, MediaLifetime), so that they do not all rotate at
	// once. 0: a session is kept until its media-handler stops relaying.
	MediaLifetime time.Duration
	// MediaInterval, if above 0, is how often each media session relays a
	// datagram each way (default Interval): the canary load's sessions
	// relay faster than its API rounds, so that a media-handler canary's
	// first check already sees enough of them.
	MediaInterval time.Duration
	// OnDemand: the API rounds run only while started (Start, or Flagger's
	// pre-rollout webhook through Webhooks), not from the start.
	OnDemand bool
	// KeySetRate, if above 0, is how many times a second (while the API
	// rounds run) the load fetches ac-service's key set, as a verifier of
	// its tokens does: the traffic ac-service's partitioned rollout is
	// judged on. Each fetch is a new connection, so that the fetches
	// spread over ac-service's pods as new connections to its Service do
	// (one kept-alive connection would reach one pod only).
	KeySetRate int

	until    atomic.Int64                  // OnDemand: unix nanoseconds the rounds run until
	lastOK   [len(apiTargets)]atomic.Int64 // unix nanoseconds of the last answered call, by apiTargets
	relayed  atomic.Int64                  // unix nanoseconds of the last relayed media datagram
	mediaLog atomic.Int64                  // unix nanoseconds of the last media log line
	requests *prometheus.CounterVec
	dgrams   *prometheus.CounterVec
	rejoins  prometheus.Counter
	webhooks *prometheus.CounterVec
}

// NewLoad registers the load's metrics with reg.
func NewLoad(c Config, interval time.Duration, reg prometheus.Registerer) *Load {
	l := &Load{Config: c, Interval: interval, TokenEvery: max(1, int(2*time.Second/interval)), Workers: 1, Media: true, MediaSessions: 1,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "darktower_load_requests_total",
			Help: "The load's API calls by the service that answered them and outcome (ok, error)."}, []string{"target", "outcome"}),
		dgrams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "darktower_load_datagrams_total",
			Help: "Datagrams the load sent through its media sessions, by the media-handler relaying them (its id, the pod name, as meeting-controller's ticket names it) and outcome (relayed, lost): a media-handler's loss is lost/(lost+relayed). Both series of a media-handler exist (at 0) from the first session placed on it."}, []string{"media_handler", "outcome"}),
		rejoins: prometheus.NewCounter(prometheus.CounterOpts{Name: "darktower_load_media_rejoins_total",
			Help: "Times one of the load's media sessions was joined again after its media-handler stopped relaying."}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "darktower_load_webhooks_total",
			Help: "Flagger's webhook calls to the load (SMOKE_LOAD_ON_DEMAND), by hook (start, gate) and result (ok, refused)."}, []string{"hook", "result"}),
	}
	// Zero series from the start: a rate over them is 0, not absent.
	for _, t := range []string{"ac-service", "global-controller", "meeting-controller"} {
		for _, o := range []string{"ok", "error"} {
			l.requests.WithLabelValues(t, o)
		}
	}
	reg.MustRegister(l.requests, l.dgrams, l.rejoins, l.webhooks)
	return l
}

// Run generates load until ctx ends, logging failures (at most one line
// per Interval per kind) to log.
func (l *Load) Run(ctx context.Context, log io.Writer) error {
	hc, err := httpClient(l.CAFile)
	if err != nil {
		return err
	}
	if l.Gateway != "" {
		// Dialled to the Gateway, still verified as the service's name
		// (the Gateway presents the service's own certificate).
		for _, raw := range []string{l.GCURL, l.MCURL} {
			u, err := url.Parse(raw)
			if err != nil {
				return err
			}
			hc = opskit.PinnedClient(hc, hostPort(u), l.Gateway)
		}
		fmt.Fprintf(log, "%s load: global-controller and meeting-controller through the Gateway at %s\n", time.Now().UTC().Format(time.RFC3339), l.Gateway)
	}
	keys := make(chan struct{})
	if l.KeySetRate > 0 {
		go func() { defer close(keys); l.fetchKeySets(ctx, log) }()
	} else {
		close(keys)
	}
	done := make(chan struct{})
	if l.Media {
		go func() { defer close(done); l.media(ctx, hc, log) }()
	} else {
		close(done)
	}
	// One pair of tokens, shared by the workers and renewed every
	// TokenEvery rounds' time; a renewal that fails keeps the pair held.
	var clients atomic.Pointer[[2]*authn.ServiceClient]
	renew := func() {
		if gc, mc := l.freshClients(hc, log); gc != nil && mc != nil {
			clients.Store(&[2]*authn.ServiceClient{gc, mc})
		}
	}
	renew()
	var wg sync.WaitGroup
	for range max(1, l.Workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.whileActive(ctx, l.Interval, func() {
				if c := clients.Load(); c != nil {
					l.round(ctx, c[0], c[1], log)
				}
			})
		}()
	}
	tokens := time.NewTicker(time.Duration(l.TokenEvery) * l.Interval)
	defer tokens.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			<-done
			<-keys
			return nil
		case <-tokens.C:
			renew()
		}
	}
}

// freshClients asks ac-service for a token for each audience; nil when it
// could not have one.
func (l *Load) freshClients(hc *http.Client, log io.Writer) (gc, mc *authn.ServiceClient) {
	gc = client(l.Config, hc, "global-controller")
	if _, err := gc.Token(); !l.count("ac-service", err, log) {
		gc = nil
	}
	mc = client(l.Config, hc, "meeting-controller")
	if _, err := mc.Token(); !l.count("ac-service", err, log) {
		mc = nil
	}
	return gc, mc
}

// round is one client's API calls: global-controller's registry and a
// ticket from meeting-controller.
func (l *Load) round(ctx context.Context, gc, mc *authn.ServiceClient, log io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var list struct {
		MeetingControllers []wire.MeetingController `json:"meeting_controllers"`
	}
	l.count("global-controller", gc.GetJSON(ctx, strings.TrimSuffix(l.GCURL, "/")+"/v1/meeting-controllers", &list), log)
	var mt wire.MediaTicket
	l.count("meeting-controller", mc.PostJSON(ctx, strings.TrimSuffix(l.MCURL, "/")+"/v1/media-tickets",
		wire.MediaTicketRequest{SessionID: "load-" + randomHex(4), ParticipantID: "probe"}, &mt), log)
}

// fetchKeySets gets ac-service's key set KeySetRate times a second while
// the rounds run, each on a connection of its own.
func (l *Load) fetchKeySets(ctx context.Context, log io.Writer) {
	hc, err := httpClient(l.CAFile)
	if err != nil {
		fmt.Fprintf(log, "%s load: ac-service's key set: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		return
	}
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	u := strings.TrimSuffix(l.ACURL, "/") + "/.well-known/jwks.json"
	// At most a second's worth in flight (each times out after 5 s): a
	// slow ac-service is counted as failed fetches, not met with ever
	// more connections.
	inFlight := make(chan struct{}, l.KeySetRate)
	var wg sync.WaitGroup
	defer wg.Wait()
	l.whileActive(ctx, time.Second/time.Duration(l.KeySetRate), func() {
		select {
		case inFlight <- struct{}{}:
		default:
			l.count("ac-service", fmt.Errorf("GET %s: %d fetches still in flight", u, l.KeySetRate), log)
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-inFlight; wg.Done() }()
			l.count("ac-service", getKeySet(ctx, hc, u), log)
		}()
	})
}

// whileActive calls f every period while the load is Active, until ctx
// ends.
func (l *Load) whileActive(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l.Active() {
				f()
			}
		}
	}
}

func getKeySet(ctx context.Context, hc *http.Client, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

func (l *Load) count(target string, err error, log io.Writer) bool {
	if err != nil {
		l.requests.WithLabelValues(target, "error").Inc()
		fmt.Fprintf(log, "%s load: %s: %v\n", time.Now().UTC().Format(time.RFC3339), target, err)
		return false
	}
	l.requests.WithLabelValues(target, "ok").Inc()
	if i := slices.Index(apiTargets[:], target); i >= 0 {
		l.lastOK[i].Store(time.Now().UnixNano())
	}
	return true
}

// media keeps MediaSessions sessions relaying, each in a goroutine of its
// own, sharing one meeting-controller client (its token is reused until it
// expires: joins do not each take a token from ac-service).
func (l *Load) media(ctx context.Context, hc *http.Client, log io.Writer) {
	mc := client(l.Config, hc, "meeting-controller")
	var wg sync.WaitGroup
	for range max(1, l.MediaSessions) {
		wg.Go(func() { l.mediaSession(ctx, mc, log) })
	}
	wg.Wait()
}

// mediaSession keeps one session relaying while the load is Active:
// joining, joining again when it stops relaying, and replacing it with a
// new one after each MediaLifetime.
func (l *Load) mediaSession(ctx context.Context, mc *authn.ServiceClient, log io.Writer) {
	first := true
	rotated := false
	for ctx.Err() == nil {
		if !l.Active() {
			sleep(ctx, l.Interval)
			continue
		}
		s, err := l.join(ctx, mc)
		if err != nil {
			l.mediaLogf(log, "media: %v", err)
			sleep(ctx, l.Interval)
			continue
		}
		// Both series from the first session on a media-handler: a rate
		// over them is 0, not absent.
		l.dgrams.WithLabelValues(s.mh, "relayed")
		l.dgrams.WithLabelValues(s.mh, "lost")
		if !rotated {
			l.mediaLogf(log, "media: session %s on %s (%s)", s.id, s.mh, s.to)
		}
		var (
			expire <-chan time.Time
			timer  *time.Timer
		)
		if life := l.MediaLifetime; life > 0 {
			if first {
				life = mrand.N(life) // staggered: not every session rotates at once
			}
			timer = time.NewTimer(life)
			expire = timer.C
		}
		first = false
		end := l.relaySession(ctx, s, expire)
		if timer != nil {
			timer.Stop()
		}
		switch end {
		case sessionLost:
			l.rejoins.Inc()
			l.mediaLogf(log, "media: session %s stopped relaying on %s; joining again", s.id, s.mh)
			rotated = false
		case sessionExpired:
			rotated = true
		case sessionInactive:
			l.mediaLogf(log, "media: the load is no longer started: session %s on %s closed", s.id, s.mh)
			// Staggered again at the next start, not all in step.
			rotated, first = false, true
		}
	}
}

type sessionEnd int

const (
	sessionDone     sessionEnd = iota // ctx ended
	sessionLost                       // three datagrams lost in a row
	sessionExpired                    // its MediaLifetime passed
	sessionInactive                   // the load is no longer Active
)

func (l *Load) mediaInterval() time.Duration {
	if l.MediaInterval > 0 {
		return l.MediaInterval
	}
	return l.Interval
}

// relaySession relays a datagram each way every media interval until the
// session ends, and closes it.
func (l *Load) relaySession(ctx context.Context, s *session, expire <-chan time.Time) sessionEnd {
	defer s.close()
	t := time.NewTicker(l.mediaInterval())
	defer t.Stop()
	lost := 0
	for {
		select {
		case <-ctx.Done():
			return sessionDone
		case <-expire:
			return sessionExpired
		case <-t.C:
			if !l.Active() {
				return sessionInactive
			}
			err := s.p.relay(s.id, s.alice, s.bob, "alice", "bob")
			if err == nil {
				l.relayed.Store(time.Now().UnixNano())
				err = s.p.relay(s.id, s.bob, s.alice, "bob", "alice")
				if err == nil {
					l.dgrams.WithLabelValues(s.mh, "relayed").Add(2)
				} else {
					l.dgrams.WithLabelValues(s.mh, "relayed").Inc()
				}
			}
			if err != nil {
				l.dgrams.WithLabelValues(s.mh, "lost").Inc()
				if lost++; lost >= 3 {
					return sessionLost
				}
				continue
			}
			l.relayed.Store(time.Now().UnixNano())
			lost = 0
		}
	}
}

// mediaLogf logs a media line, at most one per Interval across the
// sessions (many sessions failing at once say it once).
func (l *Load) mediaLogf(log io.Writer, format string, args ...any) {
	now := time.Now().UnixNano()
	last := l.mediaLog.Load()
	if now-last < int64(l.Interval) || !l.mediaLog.CompareAndSwap(last, now) {
		return
	}
	fmt.Fprintf(log, "%s load: %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type session struct {
	id         string
	mh         string // the media-handler's id (MediaTicket.MediaHandler)
	to         *net.UDPAddr
	p          participants
	alice, bob *net.UDPConn
}

func (s *session) close() { s.alice.Close(); s.bob.Close() }

// joinTicketAttempts is how many times a join asks for each ticket.
const joinTicketAttempts = 4

func (l *Load) join(ctx context.Context, mc *authn.ServiceClient) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := "load-" + randomHex(6)
	ticket := func(who string) (wire.MediaTicket, []byte, error) {
		var mt wire.MediaTicket
		var err error
		// A client asks again at once, a few times: a meeting-controller
		// canary failing some tickets (the canary proof's) delays a join,
		// it does not skip the session's turn.
		for attempt := range joinTicketAttempts {
			if attempt > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			if err = mc.PostJSON(ctx, strings.TrimSuffix(l.MCURL, "/")+"/v1/media-tickets", wire.MediaTicketRequest{SessionID: id, ParticipantID: who}, &mt); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return mt, nil, fmt.Errorf("meeting-controller's ticket for %s (%d attempts): %w", who, joinTicketAttempts, err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(mt.Ticket)
		return mt, raw, err
	}
	a, aRaw, err := ticket("alice")
	if err != nil {
		return nil, err
	}
	_, bRaw, err := ticket("bob")
	if err != nil {
		return nil, err
	}
	to, err := net.ResolveUDPAddr("udp", a.MediaAddr)
	if err != nil {
		return nil, err
	}
	s := &session{id: id, mh: a.MediaHandler, to: to, p: participants{timeout: l.Timeout, to: to}}
	if s.alice, err = s.p.join("alice", aRaw); err != nil {
		return nil, err
	}
	if s.bob, err = s.p.join("bob", bRaw); err != nil {
		s.alice.Close()
		return nil, err
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
