// Package mc is the Meeting Controller: it registers with GC and heartbeats,
// and keeps the registry of its media handlers in Redis.
package mc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Config is meeting-controller's own configuration.
type Config struct {
	ID                string         // MC_ID (default: host name, i.e. the pod name)
	Region            string         // MC_REGION
	AdvertiseURL      string         // MC_ADVERTISE_URL: how GC and MHs reach this MC's API
	RedisAddr         string         // MC_REDIS_ADDR
	RedisPassword     envconf.Secret // MC_REDIS_PASSWORD (optional)
	RedisCluster      bool           // MC_REDIS_CLUSTER: MC_REDIS_ADDR is a Redis Cluster node (ADR-0012 §5)
	GCURL             string         // MC_GC_URL
	TokenURL          string         // MC_AC_TOKEN_URL
	JWKSURL           string         // MC_AC_JWKS_URL: to verify media handlers' tokens
	Issuer            string         // MC_AC_ISSUER
	ClientID          string         // MC_CLIENT_ID
	ClientSecret      envconf.Secret // MC_CLIENT_SECRET
	Audience          string         // MC_AUDIENCE: the aud MH tokens must carry
	GCAudience        string         // MC_GC_AUDIENCE: the aud requested for calls to GC
	HeartbeatInterval time.Duration  // MC_HEARTBEAT_INTERVAL
	MHTTL             time.Duration  // MC_MH_TTL: an MH without heartbeat for this long is dropped
	TicketTTL         time.Duration  // MC_TICKET_TTL: lifetime of a media join ticket
	TicketClients     []string       // MC_TICKET_CLIENTS: token subjects allowed to request media tickets
	// MC_MH_WARMUP: a starting MC is not ready until a media-handler has
	// registered with it, or this long has passed (0: no wait).
	MHWarmup time.Duration
	Flags    flags.Config // FLAGS_URL, FLAGS_CACHE_FILE, FLAGS_AUDIENCE
}

// LoadConfig reads meeting-controller's variables.
func LoadConfig(l *envconf.Loader) Config {
	host, _ := os.Hostname()
	c := Config{
		ID:                l.String("MC_ID", host),
		Region:            l.String("MC_REGION", "local"),
		RedisAddr:         l.RequiredString("MC_REDIS_ADDR", "the Redis address host:port, e.g. redis:6379"),
		RedisPassword:     envconf.NewSecret(l.String("MC_REDIS_PASSWORD", "")),
		RedisCluster:      l.Bool("MC_REDIS_CLUSTER", false),
		Issuer:            l.String("MC_AC_ISSUER", "https://ac-service"),
		ClientID:          l.String("MC_CLIENT_ID", "meeting-controller"),
		ClientSecret:      l.RequiredSecret("MC_CLIENT_SECRET", "this MC's client secret registered with AC"),
		Audience:          l.String("MC_AUDIENCE", "meeting-controller"),
		GCAudience:        l.String("MC_GC_AUDIENCE", "global-controller"),
		HeartbeatInterval: l.Duration("MC_HEARTBEAT_INTERVAL", 10*time.Second, 100*time.Millisecond, 10*time.Minute),
		MHTTL:             l.Duration("MC_MH_TTL", 30*time.Second, time.Second, time.Hour),
		TicketTTL:         l.Duration("MC_TICKET_TTL", time.Minute, 5*time.Second, 10*time.Minute),
		TicketClients:     l.List("MC_TICKET_CLIENTS", ""),
		MHWarmup:          l.Duration("MC_MH_WARMUP", 30*time.Second, 0, 10*time.Minute),
		Flags:             flags.LoadConfig(l),
	}
	if _, _, err := net.SplitHostPort(c.RedisAddr); c.RedisAddr != "" && err != nil {
		l.Problemf("MC_REDIS_ADDR is malformed: expected host:port, e.g. redis:6379")
	}
	c.AdvertiseURL = l.HTTPSURL("MC_ADVERTISE_URL", "this MC's API URL as GC and MHs reach it, e.g. https://meeting-controller")
	c.GCURL = l.HTTPSURL("MC_GC_URL", "GC's API base URL, e.g. https://global-controller")
	c.TokenURL = l.HTTPSURL("MC_AC_TOKEN_URL", "AC's token endpoint, e.g. https://ac-service/v1/oauth/token")
	c.JWKSURL = l.HTTPSURL("MC_AC_JWKS_URL", "AC's JWKS, e.g. https://ac-service/.well-known/jwks.json")
	return c
}

// Service is a running MC.
type Service struct {
	cfg      Config
	kit      *opskit.Kit
	rdb      redis.UniversalClient
	gc       *authn.ServiceClient
	keys     *authn.KeySet
	verifier *authn.Verifier
	gcReg    opskit.Freshness
	beats    *prometheus.CounterVec
	// ticketKey signs media join tickets; MHs learn it from their
	// registration replies. A new key per process start.
	ticketKey mticket.Key
	tickets   *prometheus.CounterVec
	draining  atomic.Bool // shutting down: no more heartbeats to GC
	started   time.Time
	warm      atomic.Bool // a media-handler has registered, or MHWarmup has passed
	flags     *flags.Client
	rr        atomic.Uint64 // the round-robin strategy's position
}

// newRedis connects to one Redis server, or through one node to a Redis
// Cluster (the client follows MOVED/ASK redirections and slot changes).
func newRedis(cfg Config) redis.UniversalClient {
	// One quick redial: readiness must see an outage within its 1 s budget,
	// not after the default five back-off attempts.
	if cfg.RedisCluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: []string{cfg.RedisAddr}, Password: cfg.RedisPassword.Reveal(),
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
			MaxRetries: 1, DialerRetries: 1, DialerRetryTimeout: 50 * time.Millisecond,
			Dialer: fragileDialer(),
		})
	}
	return redis.NewClient(&redis.Options{
		Addr: cfg.RedisAddr, Password: cfg.RedisPassword.Reveal(),
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: 1, DialerRetries: 1, DialerRetryTimeout: 50 * time.Millisecond,
		Dialer: fragileDialer(), // nil except in a chaosfragile test build
	})
}

// New builds MC.
func New(_ context.Context, kit *opskit.Kit, cfg Config) (opskit.Service, error) {
	return NewService(kit, cfg), nil
}

// NewService is New with the concrete type (tests).
func NewService(kit *opskit.Kit, cfg Config) *Service {
	rdb := newRedis(cfg)
	keys := &authn.KeySet{URL: cfg.JWKSURL, Client: kit.HTTPClient, RefreshInterval: 5 * time.Minute,
		MinRefetch: 10 * time.Second, Logger: kit.Logger}
	s := &Service{
		cfg: cfg, kit: kit, rdb: rdb, keys: keys, started: time.Now(),
		gc:       authn.NewServiceClient(kit.HTTPClient, cfg.TokenURL, cfg.ClientID, cfg.ClientSecret, cfg.GCAudience),
		verifier: &authn.Verifier{Keys: keys, Issuer: cfg.Issuer, Audience: cfg.Audience, Leeway: 5 * time.Second},
		beats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_gc_heartbeats_total",
			Help: "Registrations/heartbeats sent to GC, by result (ok, error).",
		}, []string{"result"}),
	}
	var err error
	if s.ticketKey, err = mticket.NewKey(); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	s.tickets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_media_tickets_total",
		Help: "Media join ticket requests by outcome (issued, forbidden, invalid, no_media_handler, error).",
	}, []string{"outcome"})
	// Its own token source: the gateway's audience, this MC's credentials.
	s.flags = flags.ForService(cfg.Flags, kit, authn.NewServiceClient(kit.HTTPClient, cfg.TokenURL, cfg.ClientID,
		cfg.ClientSecret, cfg.Flags.Audience).BearerToken)
	kit.Registry.MustRegister(s.beats, s.tickets)
	// go-redis reports reconnect attempts through a process-wide logger;
	// route them into the JSON log at debug level (readiness already says
	// when Redis is down).
	redis.SetLogger(redisLogger{kit.Logger})
	return s
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// registrationMaxAge: ready while the last GC registration is at most three
// heartbeat intervals old.
func (s *Service) registrationMaxAge() time.Duration { return 3 * s.cfg.HeartbeatInterval }

// Checks: Redis PING and a current GC registration (ADR-0012), and, while
// it starts, a registered media-handler (warm-up).
func (s *Service) Checks() []opskit.Check {
	// The flag client only when a gateway is configured; informational:
	// flags never gate readiness.
	return append([]opskit.Check{
		{Name: "redis", Func: s.pingRedis},
		{Name: "gc_registration", Func: func(context.Context) error {
			return s.gcReg.Within(s.registrationMaxAge(), time.Now())
		}},
		{Name: "media_handler_warmup", Func: s.warmedUp},
	}, s.flags.Checks()...)
}

// warmedUp holds a starting MC out of its Service until a media-handler
// has registered with it (MHs find a new MC within 2 s, MH_MC_PEERS, once
// it is registered with GC) or MC_MH_WARMUP has passed. Without it a
// replacement MC was put in service before any MH knew it and answered
// every ticket "no media handler is admitting" for up to an MH heartbeat
// interval (MHs then found new MCs once per interval): the chaos
// stage's error budget caught it (10 % of the load's calls during an MC
// pod-delete). Once warm it stays warm: an MC that later loses its MHs is
// not taken out of service for it (signalling outlives media).
func (s *Service) warmedUp(ctx context.Context) error {
	if s.warm.Load() {
		return nil
	}
	if time.Since(s.started) >= s.cfg.MHWarmup {
		s.warm.Store(true)
		return nil
	}
	live, err := s.liveMHs(ctx)
	if err != nil {
		return err
	}
	for _, mh := range live {
		if mh.Admitting {
			s.warm.Store(true)
			return nil
		}
	}
	return fmt.Errorf("no admitting media-handler has registered yet (warming up for at most MC_MH_WARMUP=%s)", s.cfg.MHWarmup)
}

// ready reports whether this MC may take registrations from MHs.
func (s *Service) ready(ctx context.Context) bool {
	return s.gcReg.Within(s.registrationMaxAge(), time.Now()) == nil && s.pingRedis(ctx) == nil
}

func (s *Service) pingRedis(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// registrationRetry bounds the wait after a failed GC registration (as
// media-handler's after a failed MC registration). Waiting a whole interval
// instead let an outage of two intervals (the chaos stage's 20 s
// pod-network-loss) age the registration past registrationMaxAge several
// seconds after GC was reachable again: the MC, then not ready, refused
// every ticket and MH registration 503 meanwhile.
const registrationRetry = 2 * time.Second

// Run keeps AC's JWKS fresh and registers with GC every heartbeat interval,
// retrying a failed registration within registrationRetry.
func (s *Service) Run(ctx context.Context) error {
	defer flags.Start(ctx, s.flags)()
	go s.keys.Run(ctx)
	reg := wire.MCRegistration{ID: s.cfg.ID, Endpoint: s.cfg.AdvertiseURL, Region: s.cfg.Region}
	authn.Heartbeat{
		Client: s.gc, URL: s.cfg.GCURL + "/v1/meeting-controllers", Interval: s.cfg.HeartbeatInterval,
		Retry: min(s.cfg.HeartbeatInterval, registrationRetry),
		Body: func() (any, error) {
			if s.draining.Load() {
				return nil, errDraining
			}
			return reg, nil
		},
		Fresh: &s.gcReg, Results: s.beats, Logger: s.kit.Logger,
	}.Run(ctx)
	return nil
}

var errDraining = errors.New("shutting down: deregistered")

// Close releases the Redis client.
func (s *Service) Close() { _ = s.rdb.Close() }

// Routes: media-handler register/heartbeat and list, behind AC tokens.
func (s *Service) Routes(mux *opskit.Mux) {
	mux.Handle("POST /v1/media-handlers", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.register)))
	mux.Handle("GET /v1/media-handlers", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.list)))
	mux.Handle("POST /v1/media-tickets", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.ticket)))
	mux.Handle("DELETE /v1/media-handlers/{id}", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.deregisterMH)))
}

// deregisterMH withdraws an MH at its shutdown (only by the client owning
// its id): no new session is placed on it.
func (s *Service) deregisterMH(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !authn.ClaimsFrom(r.Context()).OwnsInstance(id) {
		wire.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "this client may not deregister this id"})
		return
	}
	_, err := s.rdb.TxPipelined(r.Context(), func(p redis.Pipeliner) error {
		p.HDel(r.Context(), s.registryKey(), id)
		p.ZRem(r.Context(), s.heartbeatKey(), id)
		return nil
	})
	if err != nil {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Deregister (at shutdown): no more heartbeats, and GC forgets this MC.
func (s *Service) Deregister(ctx context.Context) {
	s.draining.Store(true)
	u := s.cfg.GCURL + "/v1/meeting-controllers/" + url.PathEscape(s.cfg.ID)
	if err := s.gc.Delete(ctx, u); err != nil {
		s.kit.Logger.Warn("deregistering from GC failed; GC drops this MC after its TTL", "error", err.Error())
		return
	}
	s.kit.Logger.Info("deregistered from GC")
}

// The {id} hash tag keeps an MC's two keys in one Redis Cluster slot, so
// the transactions that update both work on a cluster too.
func (s *Service) registryKey() string  { return "dt:mc:{" + s.cfg.ID + "}:media-handlers" }
func (s *Service) heartbeatKey() string { return "dt:mc:{" + s.cfg.ID + "}:media-handlers:heartbeat" }

func (s *Service) register(w http.ResponseWriter, r *http.Request) {
	// Taking registrations while not ready would hand MHs to an MC that GC
	// does not know; refusing makes the readiness chain MH → MC → GC hold.
	if !s.ready(r.Context()) {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "meeting controller not ready"})
		return
	}
	var mh wire.MHRegistration
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mh); err != nil {
		wire.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed JSON body"})
		return
	}
	if err := mh.Validate(); err != nil {
		wire.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	// Authorisation by identity: only the client owning this MH id (its
	// AC entry's instances, carried in the token) may register it.
	if !authn.ClaimsFrom(r.Context()).OwnsInstance(mh.ID) {
		s.kit.Logger.Warn("registration refused: id not owned by the caller", "id", mh.ID, "subject", authn.ClaimsFrom(r.Context()).Subject)
		wire.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "this client may not register this id"})
		return
	}
	data, _ := json.Marshal(mh)
	now := time.Now()
	_, err := s.rdb.TxPipelined(r.Context(), func(p redis.Pipeliner) error {
		p.HSet(r.Context(), s.registryKey(), mh.ID, data)
		p.ZAdd(r.Context(), s.heartbeatKey(), redis.Z{Score: float64(now.UnixMilli()), Member: mh.ID})
		return nil
	})
	if err != nil {
		s.kit.Logger.Warn("storing media handler failed", "error", err.Error())
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	kid, secret := s.ticketKey.Encode()
	wire.WriteJSON(w, http.StatusOK, wire.MHRegistrationReply{ID: mh.ID, HeartbeatIntervalMS: s.cfg.HeartbeatInterval.Milliseconds(),
		TicketKey: wire.TicketKey{KeyID: kid, Secret: secret}})
}

// liveMHs prunes media handlers whose heartbeat is older than MC_MH_TTL and
// returns the others.
func (s *Service) liveMHs(ctx context.Context) ([]wire.MHRegistration, error) {
	cutoff := time.Now().Add(-s.cfg.MHTTL).UnixMilli()
	// Expired entries are pruned here rather than by a sweeper: readers
	// are the only ones who care.
	expired, err := s.rdb.ZRangeByScore(ctx, s.heartbeatKey(), &redis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(cutoff, 10)}).Result()
	if err == nil && len(expired) > 0 {
		_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			members := make([]any, len(expired))
			for i, id := range expired {
				members[i] = id
			}
			p.ZRem(ctx, s.heartbeatKey(), members...)
			p.HDel(ctx, s.registryKey(), expired...)
			return nil
		})
	}
	var ids []string
	if err == nil {
		ids, err = s.rdb.ZRange(ctx, s.heartbeatKey(), 0, -1).Result()
	}
	live := []wire.MHRegistration{}
	if err == nil && len(ids) > 0 {
		var vals []any
		vals, err = s.rdb.HMGet(ctx, s.registryKey(), ids...).Result()
		for _, v := range vals {
			str, ok := v.(string)
			var mh wire.MHRegistration
			if ok && json.Unmarshal([]byte(str), &mh) == nil {
				live = append(live, mh)
			}
		}
	}
	return live, err
}

func (s *Service) list(w http.ResponseWriter, r *http.Request) {
	live, err := s.liveMHs(r.Context())
	if err != nil {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"media_handlers": live})
}

var mediaID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ticket issues a media join ticket: MC authorises the (session,
// participant) and places the session on an admitting MH; the MH forwards
// only for sources that joined with such a ticket.
func (s *Service) ticket(w http.ResponseWriter, r *http.Request) {
	if !slices.Contains(s.cfg.TicketClients, authn.ClaimsFrom(r.Context()).Subject) {
		s.tickets.WithLabelValues("forbidden").Inc()
		wire.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "this client may not request media tickets"})
		return
	}
	// Not ready (GC or Redis lost): the MHs are refused their heartbeats
	// and stop opening sessions, so no new session is placed either.
	if !s.ready(r.Context()) {
		s.tickets.WithLabelValues("error").Inc()
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "meeting controller not ready"})
		return
	}
	var req wire.MediaTicketRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || !mediaID.MatchString(req.SessionID) || !mediaID.MatchString(req.ParticipantID) {
		s.tickets.WithLabelValues("invalid").Inc()
		wire.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "session_id and participant_id must match " + mediaID.String()})
		return
	}
	live, err := s.liveMHs(r.Context())
	if err != nil {
		s.tickets.WithLabelValues("error").Inc()
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	mh, ok := s.place(r.Context(), req.SessionID, live)
	if !ok {
		s.tickets.WithLabelValues("no_media_handler").Inc()
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no media handler is admitting"})
		return
	}
	exp := time.Now().Add(s.cfg.TicketTTL).Truncate(time.Second)
	raw, err := mticket.Issue(s.ticketKey, mh.ID, req.SessionID, req.ParticipantID, exp)
	if err != nil {
		s.tickets.WithLabelValues("error").Inc()
		wire.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "issuing ticket failed"})
		return
	}
	s.tickets.WithLabelValues("issued").Inc()
	wire.WriteJSON(w, http.StatusOK, wire.MediaTicket{Ticket: base64.RawURLEncoding.EncodeToString(raw),
		MediaHandler: mh.ID, MediaAddr: mh.MediaAddr, ExpiresAt: exp.UTC()})
}

// The strategies of the flag mc.mh_selection.strategy.
const (
	StrategyRendezvous  = "rendezvous"   // the static default: placeSession, as before flags
	StrategyLeastLoaded = "least-loaded" // the admitting MH with the lowest utilisation at its last heartbeat
	StrategyRoundRobin  = "round-robin"  // the admitting MHs in turn (by id), per MC
)

// sessionPinTTL is how long MC remembers where it placed a session
// (renewed at each ticket for it).
const sessionPinTTL = 12 * time.Hour

func (s *Service) sessionKey(sessionID string) string {
	return "dt:mc:{" + s.cfg.ID + "}:session:" + sessionID
}

// place picks the admitting MH for a session's ticket by the strategy the
// flag mc.mh_selection.strategy names now (read at each ticket, so a
// change applies to the next one). Every participant of a session must
// reach the same MH, so a strategy picks an MH only for a session not
// placed yet: MC records each placement in Redis ("<strategy> <mh id>",
// sessionPinTTL) and a session stays on its MH while that MH is live and
// admitting. The static default, rendezvous, places exactly as before
// flags (the hash of the session id, re-evaluated at each ticket); it
// only honours a placement another strategy made, so that switching
// back does not split the sessions placed meanwhile. The record is best
// effort: without Redis answering it, the strategy decides alone.
func (s *Service) place(ctx context.Context, sessionID string, live []wire.MHRegistration) (wire.MHRegistration, bool) {
	strategy := s.flags.String(flags.McMhSelectionStrategy)
	admitting := map[string]wire.MHRegistration{}
	for _, mh := range live {
		if mh.Admitting {
			admitting[mh.ID] = mh
		}
	}
	if len(admitting) == 0 {
		return wire.MHRegistration{}, false
	}
	key := s.sessionKey(sessionID)
	pin, err := s.rdb.Get(ctx, key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		s.kit.Logger.Debug("reading a session's placement failed; placing by the strategy alone", "error", err.Error())
	}
	pinStrategy, pinned, _ := strings.Cut(pin, " ")
	if mh, ok := admitting[pinned]; ok && (strategy != StrategyRendezvous || pinStrategy != StrategyRendezvous) {
		s.rdb.Expire(ctx, key, sessionPinTTL)
		return mh, true
	}
	var mh wire.MHRegistration
	switch strategy {
	case StrategyLeastLoaded:
		mh = leastLoaded(sessionID, admitting)
	case StrategyRoundRobin:
		ids := slices.Sorted(maps.Keys(admitting))
		mh = admitting[ids[(s.rr.Add(1)-1)%uint64(len(ids))]]
	default: // rendezvous; the catalogue rejects any other value
		mh, _ = placeSession(sessionID, live)
	}
	if pin == "" && strategy != StrategyRendezvous {
		// Two first participants at once: the first placement wins.
		if set, err := s.rdb.SetNX(ctx, key, strategy+" "+mh.ID, sessionPinTTL).Result(); err == nil && !set {
			if again, err := s.rdb.Get(ctx, key).Result(); err == nil {
				if _, id, _ := strings.Cut(again, " "); admitting[id].ID != "" {
					return admitting[id], true
				}
			}
		}
		return mh, true
	}
	if err := s.rdb.Set(ctx, key, strategy+" "+mh.ID, sessionPinTTL).Err(); err != nil {
		s.kit.Logger.Debug("recording a session's placement failed", "error", err.Error())
	}
	return mh, true
}

// leastLoaded is the admitting MH with the lowest utilisation (at its
// last heartbeat); ties go by rendezvous hashing of the session.
func leastLoaded(sessionID string, admitting map[string]wire.MHRegistration) wire.MHRegistration {
	var best []wire.MHRegistration
	for _, mh := range admitting {
		switch {
		case len(best) == 0 || mh.Utilization < best[0].Utilization:
			best = []wire.MHRegistration{mh}
		case mh.Utilization == best[0].Utilization:
			best = append(best, mh)
		}
	}
	mh, _ := placeSession(sessionID, best)
	return mh
}

// placeSession picks the admitting MH for a session by rendezvous hashing,
// so every participant of a session lands on the same MH while the set of
// admitting MHs is stable.
func placeSession(sessionID string, live []wire.MHRegistration) (wire.MHRegistration, bool) {
	var best wire.MHRegistration
	var bestScore uint64
	found := false
	for _, mh := range live {
		if !mh.Admitting {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(mh.ID))
		h.Write([]byte{0})
		h.Write([]byte(sessionID))
		if sc := h.Sum64(); !found || sc > bestScore {
			best, bestScore, found = mh, sc, true
		}
	}
	return best, found
}
