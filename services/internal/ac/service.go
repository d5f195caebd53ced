// Package ac is the Authentication Controller: it keeps Ed25519 signing keys
// in PostgreSQL (private halves sealed under AC_MASTER_KEY), publishes their
// public halves as a JWKS, and issues short-lived access tokens to service
// clients by the OAuth 2.0 client-credentials grant.
package ac

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/pgstore"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is ac-service's own configuration.
type Config struct {
	DatabaseURL envconf.Secret // AC_DATABASE_URL
	MasterKey   envconf.Secret // AC_MASTER_KEY: 32 bytes, base64
	MasterVer   int            // AC_MASTER_KEY_VERSION
	MasterPrev  envconf.Secret // AC_MASTER_KEY_PREVIOUS: the version MasterVer-1 key, while re-sealing
	ClientsFile string         // AC_CLIENTS_FILE
	Issuer      string         // AC_ISSUER: the iss claim
	TokenTTL    time.Duration  // AC_TOKEN_TTL (≤ 15 min)
	KeyReload   time.Duration  // AC_KEY_RELOAD: how often keys are re-read (rotation by another replica)
	DBMaxConns  int            // AC_DB_MAX_CONNS
	Guard       GuardConfig    // AC_AUTH_*, AC_TOKEN_RATE_*, AC_FAILURE_LOG_INTERVAL
	Flags       flags.Config   // FLAGS_URL, FLAGS_CACHE_FILE, FLAGS_AUDIENCE
}

// LoadConfig reads ac-service's variables.
func LoadConfig(l *envconf.Loader) Config {
	return Config{
		DatabaseURL: l.RequiredSecret("AC_DATABASE_URL", "a PostgreSQL URL, e.g. postgres://ac:PASSWORD@db:5432/ac?sslmode=verify-full"),
		MasterKey:   l.Base64Key("AC_MASTER_KEY", 32),
		MasterVer:   l.Int("AC_MASTER_KEY_VERSION", 1, 1, 1_000_000),
		MasterPrev:  l.OptionalBase64Key("AC_MASTER_KEY_PREVIOUS", 32),
		ClientsFile: l.File("AC_CLIENTS_FILE", "the JSON file of service clients (id, secret_bcrypt, audiences)"),
		Issuer:      l.String("AC_ISSUER", "https://ac-service"),
		TokenTTL:    l.Duration("AC_TOKEN_TTL", 10*time.Minute, time.Minute, authn.MaxTokenTTL),
		KeyReload:   l.Duration("AC_KEY_RELOAD", time.Minute, time.Second, time.Hour),
		DBMaxConns:  l.Int("AC_DB_MAX_CONNS", 10, 1, 200),
		Guard: GuardConfig{
			Concurrency:       l.Int("AC_AUTH_CONCURRENCY", max(1, runtime.GOMAXPROCS(0)/2), 1, 256),
			ConcurrencySource: l.Int("AC_AUTH_CONCURRENCY_PER_SOURCE", 1, 1, 256),
			QueueWait:         l.Duration("AC_AUTH_QUEUE_WAIT", 200*time.Millisecond, 0, 10*time.Second),
			SourceRate:        l.Float("AC_TOKEN_RATE_PER_SOURCE", 5, 0.01, 1e5),
			ClientRate:        l.Float("AC_TOKEN_RATE_PER_CLIENT", 10, 0.01, 1e5),
			FailureLogEvery:   l.Duration("AC_FAILURE_LOG_INTERVAL", 10*time.Second, 100*time.Millisecond, time.Hour),
		},
		Flags: flags.LoadConfig(l),
	}
}

// FlagsSubject is the subject of the tokens AC signs for itself to
// subscribe to the flag gateway (its FLAGS_SUBSCRIBERS lists it).
const FlagsSubject = "ac-service"

// Bounds on a token lifetime set by the flag ac.token.ttl_seconds (the
// catalogue rejects values outside them; clamped here too).
const (
	minFlagTTL = 60 * time.Second
	maxFlagTTL = 900 * time.Second
)

// Service is a running AC.
type Service struct {
	cfg     Config
	kit     *opskit.Kit
	pool    *pgxpool.Pool
	store   *Store
	clients map[string]Client
	guard   *guard

	mu     sync.RWMutex
	keys   []SigningKey
	signer *authn.Signer

	flags *flags.Client

	issued *prometheus.CounterVec
	// keyInfo is 1 for the active key's kid: the chaos stage counts the
	// kids a pod-delete leaves behind (one, when the key survives restarts).
	keyInfo *prometheus.GaugeVec
}

// New builds AC; it does not need the database yet (Run migrates and loads
// keys, retrying until PostgreSQL answers).
func New(_ context.Context, kit *opskit.Kit, cfg Config) (opskit.Service, error) {
	return NewService(kit, cfg)
}

// NewService is New with the concrete type (tests).
func NewService(kit *opskit.Kit, cfg Config) (*Service, error) {
	clients, err := LoadClients(cfg.ClientsFile)
	if err != nil {
		return nil, err
	}
	pool, err := pgstore.Open(cfg.DatabaseURL, int32(cfg.DBMaxConns), kit.Registry)
	if err != nil {
		return nil, errors.New("AC_DATABASE_URL: " + err.Error())
	}
	store := NewStore(pool, []byte(cfg.MasterKey.Reveal()))
	store.MasterVersion = max(1, cfg.MasterVer)
	if prev := cfg.MasterPrev.Reveal(); prev != "" {
		store.Previous = []byte(prev)
	}
	// A replaced key stays published while a replica may still sign with
	// it (until its next reload) plus the life of the tokens it signed.
	store.RetireAfter = cfg.KeyReload + cfg.TokenTTL + time.Minute
	if cfg.Flags.URL != "" || cfg.Flags.CacheFile != "" {
		// ac.token.ttl_seconds may raise the lifetime up to 15 minutes.
		store.RetireAfter = cfg.KeyReload + authn.MaxTokenTTL + time.Minute
	}
	g, err := newGuard(cfg.Guard, clients)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, kit: kit, pool: pool, clients: clients, guard: g,
		store: store,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ac_tokens_total",
			Help: "Token requests by outcome (issued, invalid_client, invalid_request, unsupported_grant_type, invalid_target, rate_limited, overloaded, temporarily_unavailable, server_error).",
		}, []string{"outcome"}),
		keyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ac_signing_key_info",
			Help: "Always 1; kid is the active signing key's id.",
		}, []string{"kid"}),
	}
	// AC subscribes with a token it signs itself: it holds the keys.
	s.flags = flags.ForService(cfg.Flags, kit, s.flagsToken)
	kit.Registry.MustRegister(s.issued, s.keyInfo)
	return s, nil
}

// Checks: an active signing key (ADR-0012), and database connectivity as
// information only: once the keys are loaded, AC issues tokens and serves
// its JWKS from memory, so a database outage must not take it (and every
// service whose tokens it issues) out of service. Without a key (first
// start, wrong master key) it is not ready.
func (s *Service) Checks() []opskit.Check {
	// The flag client only when a gateway is configured; informational:
	// flags never gate readiness.
	return append([]opskit.Check{
		{Name: "database", Func: pgstore.Ping(s.pool), Informational: true},
		{Name: "signing_key", Func: func(context.Context) error {
			if s.currentSigner() == nil {
				return ErrNoActiveKey
			}
			return nil
		}},
	}, s.flags.Checks()...)
}

// flagsToken signs AC's own token for the flag gateway.
func (s *Service) flagsToken(context.Context) (string, error) {
	signer := s.currentSigner()
	if signer == nil {
		return "", ErrNoActiveKey
	}
	sg := *signer
	sg.TTL = min(sg.TTL, 5*time.Minute)
	tok, _, err := sg.Issue(FlagsSubject, s.cfg.Flags.Audience, time.Now())
	return tok, err
}

// TokenTTL is the lifetime of the tokens issued now: the flag
// ac.token.ttl_seconds (read at each issue, clamped to 60–900 s) once it
// has a value from the gateway or the cache; while it is at its static
// default (no gateway, no cache, or the key deleted from etcd),
// AC_TOKEN_TTL as before flags.
func (s *Service) TokenTTL() time.Duration {
	v, src, ok := s.flags.Lookup(flags.AcTokenTtlSeconds)
	if !ok || src == flags.FromDefault {
		return s.cfg.TokenTTL
	}
	return min(max(time.Duration(v.I)*time.Second, minFlagTTL), maxFlagTTL)
}

// Run migrates, ensures and loads the active key, then reloads keys
// periodically so a rotation by another replica is picked up.
func (s *Service) Run(ctx context.Context) error {
	log := s.kit.Logger
	defer flags.Start(ctx, s.flags)()
	logged := make(chan struct{})
	go func() { defer close(logged); s.guard.logRefusals(ctx, log) }()
	defer func() { <-logged }()
	migrated := false
	opskit.Every(ctx, s.cfg.KeyReload, time.Second, func(ctx context.Context) error {
		start := time.Now()
		if !migrated {
			if err := s.store.Migrate(ctx); err != nil {
				log.Warn("schema migration failed; retrying", "error", err.Error())
				return err
			}
			migrated = true
			if fragileForgetsKey {
				if err := s.store.forgetKey(ctx, RotationLead(s.cfg.KeyReload)); err != nil {
					return err
				}
				log.Warn("chaosfragile build: the signing key is rotated at every start")
			}
		}
		keys, err := s.store.EnsureActiveKey(ctx)
		if err != nil {
			log.Warn("loading signing keys failed; retrying", "error", err.Error())
			return err
		}
		if s.setKeys(keys) {
			log.Info("signing keys loaded", "active_kid", s.currentSigner().KeyID, "keys", len(keys),
				"duration_ms", time.Since(start).Milliseconds())
		}
		return nil
	})
	return nil
}

// setKeys installs keys and reports whether the active key changed.
func (s *Service) setKeys(keys []SigningKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := ""
	if s.signer != nil {
		prev = s.signer.KeyID
	}
	s.keys = keys
	for _, k := range keys {
		if k.Active {
			s.signer = &authn.Signer{KeyID: k.KeyID, Key: k.Private, Issuer: s.cfg.Issuer, TTL: s.cfg.TokenTTL}
		}
	}
	if s.signer.KeyID != prev {
		s.keyInfo.Reset()
		s.keyInfo.WithLabelValues(s.signer.KeyID).Set(1)
		return true
	}
	return false
}

func (s *Service) currentSigner() *authn.Signer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.signer
}

// Close releases the pool.
func (s *Service) Close() { s.pool.Close() }

// Routes: the JWKS and the token endpoint.
func (s *Service) Routes(mux *opskit.Mux) {
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	mux.HandleFunc("POST /v1/oauth/token", s.token)
}

func (s *Service) jwks(w http.ResponseWriter, _ *http.Request) {
	s.mu.RLock()
	set := authn.JWKS{Keys: make([]authn.JWK, 0, len(s.keys))}
	for _, k := range s.keys {
		set.Keys = append(set.Keys, authn.PublicJWK(k.KeyID, k.Public))
	}
	s.mu.RUnlock()
	if len(set.Keys) == 0 {
		http.Error(w, `{"error":"no signing keys loaded"}`, http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	_ = json.NewEncoder(w).Encode(set)
}

// tokenError answers per RFC 6749 §5.2.
func (s *Service) tokenError(w http.ResponseWriter, code int, oauthErr string) {
	s.issued.WithLabelValues(oauthErr).Inc()
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="ac-service"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": oauthErr})
}

func (s *Service) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.tokenError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		s.tokenError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	// RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		s.tokenError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	source, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		source = r.RemoteAddr
	}
	// Every password check is a bcrypt: rate-limit and bound them before
	// spending the CPU, and answer refusals at once.
	code, retry, release := s.guard.admit(r.Context(), source, id)
	if code != 0 {
		outcome := "rate_limited"
		if code == http.StatusServiceUnavailable {
			outcome = "overloaded"
		}
		s.issued.WithLabelValues(outcome).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "temporarily_unavailable"})
		return
	}
	client, ok := s.guard.authenticate(s.clients, id, secret)
	release()
	if ok {
		s.guard.trusted.add(source, id, time.Now())
	} else {
		// Counted, and logged as one summary per AC_FAILURE_LOG_INTERVAL.
		s.guard.refused[refusedInvalidClient].Add(1)
		s.tokenError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		s.tokenError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	audience := r.PostForm.Get("audience")
	if audience == "" && len(client.Audiences) == 1 {
		audience = client.Audiences[0]
	}
	if !slices.Contains(client.Audiences, audience) {
		s.tokenError(w, http.StatusBadRequest, "invalid_target")
		return
	}
	signer := s.currentSigner()
	if signer == nil {
		s.tokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable")
		return
	}
	sg := *signer
	sg.TTL = s.TokenTTL()
	tok, exp, err := sg.Issue(client.ID, audience, time.Now(), client.Instances...)
	if err != nil {
		s.kit.Logger.Error("signing token failed", "error", err.Error())
		s.tokenError(w, http.StatusInternalServerError, "server_error")
		return
	}
	s.issued.WithLabelValues("issued").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int(time.Until(exp).Seconds()),
	})
}
