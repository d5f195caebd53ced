// Package gc is the Global Controller: it keeps the registry of meeting
// controllers in PostgreSQL; MCs register and heartbeat with AC-issued tokens.
package gc

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/pgstore"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is global-controller's own configuration.
type Config struct {
	DatabaseURL envconf.Secret // GC_DATABASE_URL
	JWKSURL     string         // GC_AC_JWKS_URL
	Issuer      string         // GC_AC_ISSUER: the iss AC puts in tokens
	Audience    string         // GC_AUDIENCE
	JWKSRefresh time.Duration  // GC_JWKS_REFRESH
	MCTTL       time.Duration  // GC_MC_TTL: an MC without heartbeat for this long is not live
	DBMaxConns  int            // GC_DB_MAX_CONNS
	Flags       flags.Config   // FLAGS_URL, FLAGS_CACHE_FILE, FLAGS_AUDIENCE
	// GC calls no other service; with FLAGS_URL it needs AC credentials
	// to subscribe to the flag gateway.
	TokenURL     string         // GC_AC_TOKEN_URL (required with FLAGS_URL)
	ClientID     string         // GC_CLIENT_ID
	ClientSecret envconf.Secret // GC_CLIENT_SECRET (required with FLAGS_URL)
}

// LoadConfig reads global-controller's variables.
func LoadConfig(l *envconf.Loader) Config {
	c := Config{
		DatabaseURL: l.RequiredSecret("GC_DATABASE_URL", "a PostgreSQL URL, e.g. postgres://gc:PASSWORD@db:5432/gc?sslmode=verify-full"),
		Issuer:      l.String("GC_AC_ISSUER", "https://ac-service"),
		Audience:    l.String("GC_AUDIENCE", "global-controller"),
		JWKSRefresh: l.Duration("GC_JWKS_REFRESH", 5*time.Minute, time.Second, 24*time.Hour),
		MCTTL:       l.Duration("GC_MC_TTL", 30*time.Second, time.Second, time.Hour),
		DBMaxConns:  l.Int("GC_DB_MAX_CONNS", 10, 1, 200),
	}
	c.JWKSURL = l.HTTPSURL("GC_AC_JWKS_URL", "AC's JWKS, e.g. https://ac-service/.well-known/jwks.json")
	c.Flags = flags.LoadConfig(l)
	c.ClientID = l.String("GC_CLIENT_ID", "global-controller")
	if c.Flags.URL != "" {
		c.TokenURL = l.HTTPSURL("GC_AC_TOKEN_URL", "AC's token endpoint, to subscribe to the flag gateway (FLAGS_URL is set), e.g. https://ac-service/v1/oauth/token")
		c.ClientSecret = l.RequiredSecret("GC_CLIENT_SECRET", "GC's client secret registered with AC, to subscribe to the flag gateway (FLAGS_URL is set)")
	}
	return c
}

// jwksMaxAge is the readiness window for the JWKS: one refresh interval
// plus the time a fetch may take.
func (c Config) jwksMaxAge() time.Duration { return c.JWKSRefresh + 10*time.Second }

var migrations = []string{
	`CREATE TABLE meeting_controllers (
		id             text PRIMARY KEY,
		endpoint       text NOT NULL,
		region         text NOT NULL,
		registered_at  timestamptz NOT NULL DEFAULT now(),
		last_heartbeat timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX meeting_controllers_heartbeat ON meeting_controllers (last_heartbeat);`,
}

// dbRequestTimeout bounds the database work of one API request.
const dbRequestTimeout = 3 * time.Second

// Service is a running GC.
type Service struct {
	cfg      Config
	kit      *opskit.Kit
	pool     *pgxpool.Pool
	keys     *authn.KeySet
	verifier *authn.Verifier
	migrated opskit.Freshness
	flags    *flags.Client
}

// New builds GC.
func New(_ context.Context, kit *opskit.Kit, cfg Config) (opskit.Service, error) {
	pool, err := pgstore.Open(cfg.DatabaseURL, int32(cfg.DBMaxConns), kit.Registry)
	if err != nil {
		return nil, errors.New("GC_DATABASE_URL: " + err.Error())
	}
	keys := &authn.KeySet{URL: cfg.JWKSURL, Client: kit.HTTPClient, RefreshInterval: cfg.JWKSRefresh,
		MinRefetch: 10 * time.Second, Logger: kit.Logger}
	s := &Service{
		cfg: cfg, kit: kit, pool: pool, keys: keys,
		verifier: &authn.Verifier{Keys: keys, Issuer: cfg.Issuer, Audience: cfg.Audience, Leeway: 5 * time.Second},
	}
	var token func(context.Context) (string, error)
	if cfg.TokenURL != "" {
		token = authn.NewServiceClient(kit.HTTPClient, cfg.TokenURL, cfg.ClientID, cfg.ClientSecret, cfg.Flags.Audience).BearerToken
	}
	s.flags = flags.ForService(cfg.Flags, kit, token)
	kit.Registry.MustRegister(newLiveMCs(s))
	return s, nil
}

// Checks: database connectivity and a recently fetched AC JWKS (ADR-0012).
func (s *Service) Checks() []opskit.Check {
	// The flag client only when a gateway is configured; informational:
	// flags never gate readiness.
	return append([]opskit.Check{
		{Name: "database", Func: func(ctx context.Context) error {
			if s.migrated.Last().IsZero() {
				return errors.New("schema not migrated yet")
			}
			return s.pool.Ping(ctx)
		}},
		{Name: "ac_jwks", Func: func(context.Context) error { return s.keys.Fresh(s.cfg.jwksMaxAge()) }},
	}, s.flags.Checks()...)
}

// MCTTL is how long after its last heartbeat an MC is still listed as
// live: the flag gc.registry.mc_ttl_seconds (read at each use) once it has
// a value from the gateway or the cache; GC_MC_TTL while the flag is at
// its static default (no gateway, no cache, or the key deleted), as
// before flags.
func (s *Service) MCTTL() time.Duration {
	v, src, ok := s.flags.Lookup(flags.GcRegistryMcTtlSeconds)
	if !ok || src == flags.FromDefault {
		return s.cfg.MCTTL
	}
	return time.Duration(v.I) * time.Second
}

// Run migrates (retrying until PostgreSQL answers) and keeps the JWKS fresh.
func (s *Service) Run(ctx context.Context) error {
	defer flags.Start(ctx, s.flags)()
	go s.keys.Run(ctx)
	opskit.Every(ctx, time.Hour, time.Second, func(ctx context.Context) error {
		if !s.migrated.Last().IsZero() {
			return nil
		}
		if err := pgstore.Migrate(ctx, s.pool, "gc", migrations); err != nil {
			s.kit.Logger.Warn("schema migration failed; retrying", "error", err.Error())
			return err
		}
		s.migrated.Mark(time.Now())
		return nil
	})
	return nil
}

// Close releases the pool.
func (s *Service) Close() { s.pool.Close() }

// Routes: register/heartbeat and list, both behind AC-issued tokens.
func (s *Service) Routes(mux *opskit.Mux) {
	mux.Handle("POST /v1/meeting-controllers", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.register)))
	mux.Handle("GET /v1/meeting-controllers", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.list)))
	mux.Handle("DELETE /v1/meeting-controllers/{id}", s.verifier.Require(s.kit.Logger, http.HandlerFunc(s.deregister)))
}

// deregister withdraws an MC at shutdown (only by the client owning its
// id), so no meeting is placed on it while its registration would still
// be within GC_MC_TTL.
func (s *Service) deregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !authn.ClaimsFrom(r.Context()).OwnsInstance(id) {
		wire.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "this client may not deregister this id"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbRequestTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `DELETE FROM meeting_controllers WHERE id = $1`, id); err != nil {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) register(w http.ResponseWriter, r *http.Request) {
	var reg wire.MCRegistration
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		wire.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed JSON body"})
		return
	}
	if err := reg.Validate(); err != nil {
		wire.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	// Authorisation by identity: a client registers only the ids its AC
	// entry lists (the token's instances claim), so no other client can
	// overwrite an MC's endpoint.
	if !authn.ClaimsFrom(r.Context()).OwnsInstance(reg.ID) {
		s.kit.Logger.Warn("registration refused: id not owned by the caller", "id", reg.ID, "subject", authn.ClaimsFrom(r.Context()).Subject)
		wire.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "this client may not register this id"})
		return
	}
	// A client-side bound too: a frozen database (no answer at all, so the
	// server-side timeouts cannot fire) yields a prompt 503.
	ctx, cancel := context.WithTimeout(r.Context(), dbRequestTimeout)
	defer cancel()
	var mc wire.MeetingController
	err := s.pool.QueryRow(ctx, `
		INSERT INTO meeting_controllers (id, endpoint, region) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET endpoint = EXCLUDED.endpoint, region = EXCLUDED.region, last_heartbeat = now()
		RETURNING id, endpoint, region, registered_at, last_heartbeat`,
		reg.ID, reg.Endpoint, reg.Region).Scan(&mc.ID, &mc.Endpoint, &mc.Region, &mc.RegisteredAt, &mc.LastHeartbeat)
	if err != nil {
		s.kit.Logger.Warn("registering meeting controller failed", "error", err.Error())
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	wire.WriteJSON(w, http.StatusOK, mc)
}

func (s *Service) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), dbRequestTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `
		SELECT id, endpoint, region, registered_at, last_heartbeat FROM meeting_controllers
		WHERE last_heartbeat > now() - make_interval(secs => $1) ORDER BY id`, s.MCTTL().Seconds())
	if err != nil {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	defer rows.Close()
	live := []wire.MeetingController{}
	for rows.Next() {
		var mc wire.MeetingController
		if err := rows.Scan(&mc.ID, &mc.Endpoint, &mc.Region, &mc.RegisteredAt, &mc.LastHeartbeat); err != nil {
			wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
			return
		}
		live = append(live, mc)
	}
	if rows.Err() != nil {
		wire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"meeting_controllers": live})
}
