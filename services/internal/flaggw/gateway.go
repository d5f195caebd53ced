// Package flaggw is the flag gateway (ADR-0012 §10): it watches the flags'
// etcd prefix and pushes every change to the services' clients
// (internal/flags) over WebSocket. One etcd watch serves every subscriber;
// a subscriber that reconnects with the last revision it saw gets exactly
// the changes after it, in order, or a snapshot when they are no longer
// available.
package flaggw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Config is the gateway's environment.
type Config struct {
	Endpoints   []string      // FLAGS_ETCD_ENDPOINTS
	Prefix      string        // FLAGS_PREFIX
	History     int           // FLAGS_HISTORY: updates kept for resuming subscribers
	Buffer      int           // FLAGS_SUBSCRIBER_BUFFER: frames queued per subscriber before it is dropped as too slow
	Heartbeat   time.Duration // FLAGS_HEARTBEAT
	EtcdTimeout time.Duration // FLAGS_ETCD_TIMEOUT: per etcd request (reads, probes)

	// Subscribers authenticate with an AC access token (as the services'
	// other internal APIs): signed by a key of AC's JWKS, issued by
	// Issuer, for Audience, to a subject in Subscribers.
	JWKSURL     string   // FLAGS_AC_JWKS_URL
	Issuer      string   // FLAGS_AC_ISSUER
	Audience    string   // FLAGS_AUDIENCE
	Subscribers []string // FLAGS_SUBSCRIBERS: token subjects (AC client ids) allowed to subscribe
	// NoAuth (FLAGS_INSECURE_NO_AUTH=true) serves anyone who reaches the
	// gateway: for a local benchmark only, never a cluster.
	NoAuth bool
}

// DefaultSubscribers are the four services' default AC client ids.
const DefaultSubscribers = "ac-service,global-controller,meeting-controller,media-handler"

// LoadConfig reads the gateway's variables.
func LoadConfig(l *envconf.Loader) Config {
	c := Config{
		Prefix:  l.String("FLAGS_PREFIX", "/darktower/flags/"),
		History: l.Int("FLAGS_HISTORY", 1024, 1, 1_000_000),
		Buffer:  l.Int("FLAGS_SUBSCRIBER_BUFFER", 256, 1, 100_000),
		// At most 30 s: a client takes 35 s of silence for a dead
		// connection (flags.Options.StaleAfter) and redials.
		Heartbeat:   l.Duration("FLAGS_HEARTBEAT", 10*time.Second, 100*time.Millisecond, 30*time.Second),
		EtcdTimeout: l.Duration("FLAGS_ETCD_TIMEOUT", 2*time.Second, 100*time.Millisecond, time.Minute),
	}
	c.NoAuth = l.Bool("FLAGS_INSECURE_NO_AUTH", false)
	c.Issuer = l.String("FLAGS_AC_ISSUER", "https://ac-service")
	c.Audience = l.String("FLAGS_AUDIENCE", flags.DefaultAudience)
	c.Subscribers = l.List("FLAGS_SUBSCRIBERS", DefaultSubscribers)
	if !c.NoAuth {
		c.JWKSURL = l.HTTPSURL("FLAGS_AC_JWKS_URL", "AC's JWKS, to verify subscribers' tokens, e.g. https://ac-service/.well-known/jwks.json (FLAGS_INSECURE_NO_AUTH=true serves anyone: local benchmarks only)")
		if len(c.Subscribers) == 0 {
			l.Problemf("FLAGS_SUBSCRIBERS is empty: expected the AC client ids allowed to subscribe, e.g. %s", DefaultSubscribers)
		}
	}
	eps := l.RequiredString("FLAGS_ETCD_ENDPOINTS", "etcd's client endpoints, comma-separated, e.g. http://etcd-0.etcd:2379,http://etcd-1.etcd:2379")
	for _, e := range strings.Split(eps, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.Endpoints = append(c.Endpoints, e)
		}
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		l.Problemf("FLAGS_PREFIX is malformed: expected an etcd key prefix starting and ending with /, e.g. /darktower/flags/prod/")
	}
	return c
}

// Gateway is the service.
type Gateway struct {
	cfg Config
	log *slog.Logger
	cli *clientv3.Client

	mu        sync.Mutex
	synced    bool                   // the first read of the prefix is done
	state     map[string]flags.Entry // name → current entry
	rev       int64                  // the revision state is at
	clusterID uint64
	history   []flags.Message // updates with Revision > histStart, in order
	histStart int64
	subs      map[*subscriber]struct{}

	etcdUp atomic.Bool
	m      metrics

	keys     *authn.KeySet   // nil with NoAuth
	verifier *authn.Verifier // nil with NoAuth
	refused  *prometheus.CounterVec
}

type metrics struct {
	subscribers  prometheus.Gauge
	pushes       prometheus.Counter
	dropped      prometheus.Counter
	changes      prometheus.Counter
	etcdUp       prometheus.Gauge
	watchRev     prometheus.Gauge
	watchRestart prometheus.Counter
	snapshots    prometheus.Counter
	replays      prometheus.Counter
}

// New connects the etcd client (lazily: etcd may be down at start-up; the
// gateway is not ready until it has read the prefix).
func New(_ context.Context, kit *opskit.Kit, cfg Config) (opskit.Service, error) {
	return NewGateway(kit, cfg)
}

// NewGateway is New with the concrete type (tests, the benchmark).
func NewGateway(kit *opskit.Kit, cfg Config) (*Gateway, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.EtcdTimeout,
		// gRPC's default reconnection backoff grows to 2 minutes: the
		// watch would come back that late after an etcd restart.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.EtcdTimeout,
		})},
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(), // failures surface as our own logs and metrics
	})
	if err != nil {
		return nil, fmt.Errorf("FLAGS_ETCD_ENDPOINTS: %w", err)
	}
	g := &Gateway{cfg: cfg, log: kit.Logger.With("component", "flaggw"), cli: cli,
		state: map[string]flags.Entry{}, subs: map[*subscriber]struct{}{}}
	g.m = metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flaggw_subscribers", Help: "WebSocket subscribers connected."}),
		pushes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_pushes_total", Help: "Frames written to subscribers (snapshots, updates, heartbeats)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_subscribers_dropped_total",
			Help: "Subscribers disconnected because they fell FLAGS_SUBSCRIBER_BUFFER frames behind or a write failed."}),
		changes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_changes_total", Help: "Flag changes (puts and deletes) seen on the etcd watch."}),
		etcdUp:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "flaggw_etcd_up", Help: "1 if the last etcd probe succeeded."}),
		watchRev: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flaggw_watch_revision", Help: "The etcd revision the gateway's state is at."}),
		watchRestart: prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_watch_restarts_total",
			Help: "Times the gateway re-read the prefix and restarted its watch (etcd compacted past it, or the watch failed)."}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_snapshots_total", Help: "Subscribers started from a full snapshot."}),
		replays:   prometheus.NewCounter(prometheus.CounterOpts{Name: "flaggw_replays_total", Help: "Subscribers resumed from their revision out of the history."}),
	}
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flaggw_subscriptions_refused_total",
		Help: "Subscriptions refused: 401 (no valid AC token for FLAGS_AUDIENCE) or 403 (subject not in FLAGS_SUBSCRIBERS)."}, []string{"code"})
	kit.Registry.MustRegister(g.m.subscribers, g.m.pushes, g.m.dropped, g.m.changes, g.m.etcdUp, g.m.watchRev,
		g.m.watchRestart, g.m.snapshots, g.m.replays, g.refused)
	if cfg.NoAuth {
		g.log.Warn("FLAGS_INSECURE_NO_AUTH=true: subscribers are not authenticated; anyone who reaches the gateway reads every flag")
	} else {
		g.keys = &authn.KeySet{URL: cfg.JWKSURL, Client: kit.HTTPClient, RefreshInterval: 5 * time.Minute,
			MinRefetch: 10 * time.Second, Logger: kit.Logger}
		g.verifier = &authn.Verifier{Keys: g.keys, Issuer: cfg.Issuer, Audience: cfg.Audience, Leeway: 5 * time.Second}
	}
	return g, nil
}

// Routes serves the WebSocket endpoint on the API listener, to
// authenticated subscribers only.
func (g *Gateway) Routes(mux *opskit.Mux) {
	mux.HandleFunc("GET "+flags.WatchPath, g.authorize(g.serveWatch))
}

// authorize lets a subscription through only with a valid AC token for
// FLAGS_AUDIENCE (else 401) whose subject is in FLAGS_SUBSCRIBERS (else
// 403). Each refusal is logged (why, who, from where; never the token).
func (g *Gateway) authorize(next http.HandlerFunc) http.HandlerFunc {
	if g.verifier == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		var claims *authn.Claims
		err := authn.ErrNoToken
		if raw, ok := bearerToken(r); ok {
			claims, err = g.verifier.Verify(r.Context(), raw)
		}
		if err != nil {
			g.refused.WithLabelValues("401").Inc()
			g.log.Warn("flag subscription refused: no valid AC token", "code", 401, "reason", err.Error(),
				"remote", r.RemoteAddr, "audience", g.cfg.Audience)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		if !slices.Contains(g.cfg.Subscribers, claims.Subject) {
			g.refused.WithLabelValues("403").Inc()
			g.log.Warn("flag subscription refused: subject not in FLAGS_SUBSCRIBERS", "code", 403, "subject", claims.Subject,
				"remote", r.RemoteAddr)
			http.Error(w, `{"error":"this client may not subscribe to flags"}`, http.StatusForbidden)
			return
		}
		g.log.Debug("flag subscription authorised", "subject", claims.Subject, "remote", r.RemoteAddr)
		next(w, r)
	}
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// Checks: not ready until the prefix has been read and while etcd does not
// answer (a new subscriber would get stale values from a gateway cut off).
func (g *Gateway) Checks() []opskit.Check {
	checks := []opskit.Check{{Name: "etcd", Func: func(ctx context.Context) error {
		g.mu.Lock()
		synced := g.synced
		g.mu.Unlock()
		if !synced {
			return errors.New("flags not read from etcd yet")
		}
		return g.probe(ctx)
	}}}
	if g.keys != nil {
		// Not ready until AC's keys have been fetched once (every
		// subscriber would be refused); after that the keys held keep
		// verifying while AC is away.
		checks = append(checks, opskit.Check{Name: "ac_jwks", Func: func(context.Context) error {
			return g.keys.Fresh(100 * 365 * 24 * time.Hour)
		}})
	}
	return checks
}

func (g *Gateway) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.EtcdTimeout)
	defer cancel()
	// A linearizable read needs a quorum: it fails when etcd cannot serve.
	_, err := g.cli.Get(ctx, g.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	g.etcdUp.Store(err == nil)
	if err == nil {
		g.m.etcdUp.Set(1)
	} else {
		g.m.etcdUp.Set(0)
	}
	return err
}

// Run follows etcd until ctx ends, then closes every subscriber with
// "going away" so that they reconnect to another replica at once.
func (g *Gateway) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	if g.keys != nil {
		wg.Go(func() { g.keys.Run(ctx) })
	}
	go func() { defer wg.Done(); g.probeLoop(ctx) }()
	go func() { defer wg.Done(); g.heartbeatLoop(ctx) }()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		err := g.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(began) > 10*time.Second {
			backoff = 100 * time.Millisecond // a watch that ran a while: start over
		}
		g.m.watchRestart.Inc()
		g.log.Warn("etcd watch ended; re-reading the prefix", "error", err.Error(), "retry_in", backoff.String())
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	wg.Wait()
	g.mu.Lock()
	for s := range g.subs {
		s.closeWith(websocket.StatusGoingAway, "gateway shutting down")
		delete(g.subs, s)
	}
	g.m.subscribers.Set(0)
	g.mu.Unlock()
	return nil
}

func (g *Gateway) probeLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	wasUp := true
	for {
		up := g.probe(ctx) == nil
		if up != wasUp && ctx.Err() == nil {
			if up {
				g.log.Info("etcd reachable again")
			} else {
				g.log.Error("etcd unreachable: not ready; subscribers keep their values")
			}
			wasUp = up
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		if g.synced {
			g.broadcastLocked(flags.Message{Type: flags.MsgHeartbeat, Revision: g.rev, ClusterID: g.clusterID})
		}
		g.mu.Unlock()
	}
}

// follow reads the prefix, publishes what changed since the state held
// (nothing on the first read), then applies the watch from the next
// revision until it fails.
func (g *Gateway) follow(ctx context.Context) error {
	var resp *clientv3.GetResponse
	for {
		rctx, cancel := context.WithTimeout(ctx, g.cfg.EtcdTimeout)
		var err error
		resp, err = g.cli.Get(rctx, g.cfg.Prefix, clientv3.WithPrefix())
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		g.log.Warn("reading the flags from etcd failed; retrying", "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	g.resync(resp)
	g.mu.Lock()
	from := g.rev + 1
	g.mu.Unlock()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := g.cli.Watch(wctx, g.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return fmt.Errorf("etcd compacted past revision %d (compact revision %d)", from, wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return err
		}
		g.applyWatch(wr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

// resync makes the state equal a fresh read; what differs is published as
// one update at the read's revision, so subscribers converge without a
// reconnect and the history stays a sequence of changes.
func (g *Gateway) resync(resp *clientv3.GetResponse) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fresh := map[string]flags.Entry{}
	for _, kv := range resp.Kvs {
		name, ok := g.flagName(kv.Key)
		if !ok {
			continue
		}
		fresh[name] = flags.Entry{Name: name, Value: string(kv.Value), ModRevision: kv.ModRevision}
	}
	rev := resp.Header.Revision
	g.clusterID = resp.Header.ClusterId
	if !g.synced {
		g.state, g.rev, g.histStart, g.synced = fresh, rev, rev, true
		g.m.watchRev.Set(float64(rev))
		g.log.Info("flags read from etcd", "prefix", g.cfg.Prefix, "flags", len(fresh), "revision", rev)
		return
	}
	if rev <= g.rev {
		return
	}
	var diff []flags.Entry
	for name, e := range fresh {
		if old, ok := g.state[name]; !ok || old.ModRevision != e.ModRevision {
			diff = append(diff, e)
			g.audit(name, old, ok, e)
		}
	}
	for name, old := range g.state {
		if _, ok := fresh[name]; !ok {
			e := flags.Entry{Name: name, Deleted: true, ModRevision: rev}
			diff = append(diff, e)
			g.audit(name, old, true, e)
		}
	}
	g.state = fresh
	g.publishLocked(flags.Message{Type: flags.MsgUpdate, Revision: rev, ClusterID: g.clusterID, Flags: diff})
}

// applyWatch turns one watch response into one update per revision.
func (g *Gateway) applyWatch(wr clientv3.WatchResponse) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var cur *flags.Message
	flush := func() {
		if cur != nil {
			g.publishLocked(*cur)
			cur = nil
		}
	}
	for _, ev := range wr.Events {
		rev := ev.Kv.ModRevision
		if rev <= g.rev {
			continue // already in the state (a re-sent event after a watch resumed)
		}
		name, ok := g.flagName(ev.Kv.Key)
		if !ok {
			continue
		}
		if cur != nil && cur.Revision != rev {
			flush()
		}
		if cur == nil {
			cur = &flags.Message{Type: flags.MsgUpdate, Revision: rev, ClusterID: g.clusterID}
		}
		e := flags.Entry{Name: name, ModRevision: rev}
		old, had := g.state[name]
		if ev.Type == clientv3.EventTypeDelete {
			e.Deleted = true
			delete(g.state, name)
		} else {
			e.Value = string(ev.Kv.Value)
			g.state[name] = e
		}
		g.audit(name, old, had, e)
		cur.Flags = append(cur.Flags, e)
	}
	flush()
	// Only a progress notification promises that nothing at or below its
	// header's revision is still to come; the header of a response with
	// events does not (a watch catching up sends older events in batches
	// under the current revision), so it must not move the revision on.
	if wr.IsProgressNotify() && wr.Header.Revision > g.rev {
		g.rev = wr.Header.Revision
		g.m.watchRev.Set(float64(g.rev))
	}
}

// flagName is the flag a key holds; a key further down (another
// environment's, under a shorter prefix) is not one of ours.
func (g *Gateway) flagName(key []byte) (string, bool) {
	name := strings.TrimPrefix(string(key), g.cfg.Prefix)
	return name, name != "" && !strings.Contains(name, "/")
}

// audit logs every change with its old and new value
// (docs/operations/feature-flags.md, Auditing).
func (g *Gateway) audit(name string, old flags.Entry, had bool, e flags.Entry) {
	g.m.changes.Inc()
	oldV := "(unset)"
	if had {
		oldV = old.Value
	}
	newV := e.Value
	if e.Deleted {
		newV = "(deleted)"
	}
	g.log.Info("flag written in etcd", "flag", name, "old", oldV, "new", newV, "revision", e.ModRevision)
}

// publishLocked records an update in the history and sends it.
func (g *Gateway) publishLocked(m flags.Message) {
	if m.Revision > g.rev {
		g.rev = m.Revision
		g.m.watchRev.Set(float64(m.Revision))
	}
	g.history = append(g.history, m)
	if over := len(g.history) - g.cfg.History; over > 0 {
		g.histStart = g.history[over-1].Revision
		g.history = append(g.history[:0:0], g.history[over:]...)
	}
	g.broadcastLocked(m)
}

func (g *Gateway) broadcastLocked(m flags.Message) {
	if len(g.subs) == 0 {
		return
	}
	b, _ := json.Marshal(m)
	for s := range g.subs {
		if !s.enqueue(b) {
			// Too slow: dropping it keeps the others on time; it resumes
			// from its revision when it reconnects.
			g.dropLocked(s, "subscriber too slow")
		}
	}
}

func (g *Gateway) dropLocked(s *subscriber, why string) {
	if _, ok := g.subs[s]; !ok {
		return
	}
	delete(g.subs, s)
	g.m.subscribers.Set(float64(len(g.subs)))
	g.m.dropped.Inc()
	s.closeWith(websocket.StatusTryAgainLater, why)
}

// backlogLocked is what a subscriber resuming after since gets first: the
// updates after since, or a snapshot when the history does not reach back
// to it (or it is ahead of us, or from another cluster).
func (g *Gateway) backlogLocked(since int64, clusterID uint64) ([][]byte, bool) {
	if since > 0 && since >= g.histStart && since <= g.rev && (clusterID == 0 || clusterID == g.clusterID) {
		var out [][]byte
		for _, m := range g.history {
			if m.Revision > since {
				b, _ := json.Marshal(m)
				out = append(out, b)
			}
		}
		// The revision the subscriber is now at, even if nothing changed.
		b, _ := json.Marshal(flags.Message{Type: flags.MsgHeartbeat, Revision: g.rev, ClusterID: g.clusterID})
		return append(out, b), false
	}
	snap := flags.Message{Type: flags.MsgSnapshot, Revision: g.rev, ClusterID: g.clusterID}
	for _, e := range g.state {
		snap.Flags = append(snap.Flags, e)
	}
	b, _ := json.Marshal(snap)
	return [][]byte{b}, true
}

func (g *Gateway) serveWatch(w http.ResponseWriter, r *http.Request) {
	since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if r.URL.Query().Get("since") == "" {
		since, err = 0, nil
	}
	if err != nil || since < 0 {
		http.Error(w, "since must be the last etcd revision seen (an integer >= 0; 0 for none)", http.StatusBadRequest)
		return
	}
	cluster, _ := strconv.ParseUint(r.URL.Query().Get("cluster"), 16, 64)
	g.mu.Lock()
	synced := g.synced
	g.mu.Unlock()
	if !synced {
		http.Error(w, "flags not read from etcd yet; retry", http.StatusServiceUnavailable)
		return
	}
	// The API listener's read and write timeouts bound requests; a
	// subscription lives for as long as the client stays.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept has answered
	}
	s := &subscriber{conn: conn, queue: make(chan []byte, g.cfg.Buffer), done: make(chan struct{})}
	g.mu.Lock()
	// The backlog is taken and the subscriber added under one lock, so no
	// change falls between them or arrives twice.
	backlog, snapshot := g.backlogLocked(since, cluster)
	g.subs[s] = struct{}{}
	g.m.subscribers.Set(float64(len(g.subs)))
	g.mu.Unlock()
	if snapshot {
		g.m.snapshots.Inc()
	} else {
		g.m.replays.Inc()
	}
	ctx := conn.CloseRead(context.Background())
	err = s.writeLoop(ctx, backlog, g.m.pushes)
	g.mu.Lock()
	if _, ok := g.subs[s]; ok {
		delete(g.subs, s)
		g.m.subscribers.Set(float64(len(g.subs)))
	}
	g.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		g.log.Debug("subscriber write failed", "error", err.Error())
	}
	conn.CloseNow()
}

// Close releases the etcd client.
func (g *Gateway) Close() { _ = g.cli.Close() }

// Revision is the revision the gateway's state is at.
func (g *Gateway) Revision() int64 { g.mu.Lock(); defer g.mu.Unlock(); return g.rev }

// Subscribers is how many subscribers are connected.
func (g *Gateway) Subscribers() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.subs) }

type subscriber struct {
	conn      *websocket.Conn
	queue     chan []byte
	done      chan struct{}
	closeOnce sync.Once
	code      websocket.StatusCode
	reason    string
}

// enqueue never blocks the broadcaster: a full queue reports false.
func (s *subscriber) enqueue(b []byte) bool {
	select {
	case s.queue <- b:
		return true
	default:
		return false
	}
}

func (s *subscriber) closeWith(code websocket.StatusCode, reason string) {
	s.closeOnce.Do(func() { s.code, s.reason = code, reason; close(s.done) })
}

func (s *subscriber) writeLoop(ctx context.Context, backlog [][]byte, pushes prometheus.Counter) error {
	write := func(b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := s.conn.Write(wctx, websocket.MessageText, b); err != nil {
			return err
		}
		pushes.Inc()
		return nil
	}
	for _, b := range backlog {
		if err := write(b); err != nil {
			return err
		}
	}
	for {
		select {
		case b := <-s.queue:
			if err := write(b); err != nil {
				return err
			}
		case <-s.done:
			return s.conn.Close(s.code, s.reason)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
