// Package opskit is the operational contract every Dark Tower service
// shares (ADR-0012 "Standard Operational Endpoints"): the plain-HTTP ops
// listener with /health, /ready and /metrics; the TLS (HTTP/2) API listener;
// environment configuration; JSON logs; graceful shutdown.
package opskit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Version and Revision are stamped at link time by the pipeline's build
// stage (-ldflags -X .../opskit.Version=...).
var (
	Version  = "dev"
	Revision = "unknown"
)

// Common is the configuration every service takes.
type Common struct {
	Service          string
	OpsAddr          string        // OPS_ADDR: /health, /ready, /metrics (plain HTTP, in-cluster only)
	APIAddr          string        // API_ADDR: TLS HTTP/2 API; the Service maps 443 to it
	TLSCertFile      string        // TLS_CERT_FILE
	TLSKeyFile       string        // TLS_KEY_FILE
	TLSCAFile        string        // TLS_CA_FILE: extra roots trusted when calling peers
	DevSelfSignedTLS bool          // DEV_SELF_SIGNED_TLS: generate a throwaway pair instead of files
	ShutdownDelay    time.Duration // SHUTDOWN_DELAY: keep serving, not ready, while endpoints update
	ShutdownGrace    time.Duration // SHUTDOWN_GRACE: bound on draining in-flight requests
	ReadyTimeout     time.Duration // READY_CHECK_TIMEOUT: bound on each /ready evaluation
	LogLevel         slog.Level    // LOG_LEVEL
	// API listener bounds (zero: the defaults below).
	APIReadTimeout    time.Duration // API_READ_TIMEOUT: whole request, headers and body
	APIWriteTimeout   time.Duration // API_WRITE_TIMEOUT: from the end of the request headers to the end of the response
	APIIdleTimeout    time.Duration // API_IDLE_TIMEOUT: keep-alive between requests
	APIMaxConnsPerSrc int           // API_MAX_CONNS_PER_SOURCE: open connections per source IP
	// fault degrades the API listener in a canaryfault test build
	// (fault_on.go); in every other build it is empty and does nothing.
	fault apiFault
}

// Defaults are chosen against the manifests: terminationGracePeriodSeconds
// is 30, so delay + grace (25 s) leaves headroom for the kubelet's SIGKILL.
const (
	DefaultShutdownDelay = 3 * time.Second
	DefaultShutdownGrace = 22 * time.Second
	DefaultReadyTimeout  = time.Second

	DefaultAPIReadTimeout    = 10 * time.Second
	DefaultAPIWriteTimeout   = 15 * time.Second
	DefaultAPIIdleTimeout    = 60 * time.Second
	DefaultAPIMaxConnsPerSrc = 64
)

// LoadCommon reads the shared variables.
func LoadCommon(l *envconf.Loader, service string) Common {
	c := Common{
		Service:           service,
		OpsAddr:           l.Addr("OPS_ADDR", ":8080"),
		APIAddr:           l.Addr("API_ADDR", ":8443"),
		DevSelfSignedTLS:  l.Bool("DEV_SELF_SIGNED_TLS", false),
		TLSCAFile:         l.OptionalFile("TLS_CA_FILE", "a PEM bundle of CAs trusted for calls to other services"),
		ShutdownDelay:     l.Duration("SHUTDOWN_DELAY", DefaultShutdownDelay, 0, time.Minute),
		ShutdownGrace:     l.Duration("SHUTDOWN_GRACE", DefaultShutdownGrace, time.Second, 5*time.Minute),
		ReadyTimeout:      l.Duration("READY_CHECK_TIMEOUT", DefaultReadyTimeout, 100*time.Millisecond, 2500*time.Millisecond),
		APIReadTimeout:    l.Duration("API_READ_TIMEOUT", DefaultAPIReadTimeout, 100*time.Millisecond, 5*time.Minute),
		APIWriteTimeout:   l.Duration("API_WRITE_TIMEOUT", DefaultAPIWriteTimeout, 100*time.Millisecond, 5*time.Minute),
		APIIdleTimeout:    l.Duration("API_IDLE_TIMEOUT", DefaultAPIIdleTimeout, time.Second, time.Hour),
		APIMaxConnsPerSrc: l.Int("API_MAX_CONNS_PER_SOURCE", DefaultAPIMaxConnsPerSrc, 1, 100_000),
		fault:             loadAPIFault(l),
	}
	if !c.DevSelfSignedTLS {
		const expect = "the API listener's PEM certificate and key (or DEV_SELF_SIGNED_TLS=true for a throwaway development pair)"
		c.TLSCertFile = l.File("TLS_CERT_FILE", expect)
		c.TLSKeyFile = l.File("TLS_KEY_FILE", expect)
	}
	switch lv := strings.ToLower(l.String("LOG_LEVEL", "info")); lv {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		l.Problemf("LOG_LEVEL is malformed: expected debug, info, warn or error")
	}
	return c
}

// Kit is what a service gets from the runtime: logger, metrics registry and
// an HTTP client that trusts the cluster's CA.
type Kit struct {
	Logger     *slog.Logger
	Registry   *prometheus.Registry
	HTTPClient *http.Client
	ClientTLS  *tls.Config
}

// NewKit builds a Kit for the common configuration, logging JSON to out.
func NewKit(c Common, out io.Writer) (*Kit, error) {
	ctls, err := ClientTLS("TLS_CA_FILE", c.TLSCAFile)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "darktower_build_info", Help: "Always 1; the labels say which build runs."},
		[]string{"version", "revision"})
	buildInfo.WithLabelValues(Version, Revision).Set(1)
	reg.MustRegister(buildInfo)
	logger := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: c.LogLevel})).With("service", c.Service)
	return &Kit{Logger: logger, Registry: reg, HTTPClient: NewHTTPClient(ctls), ClientTLS: ctls}, nil
}

// Service is one Dark Tower service as the runtime sees it.
type Service interface {
	// Routes registers the API handlers (served over TLS).
	Routes(mux *Mux)
	// Checks lists the critical dependencies /ready evaluates.
	Checks() []Check
	// Run does background work (migrations, registration, heartbeats,
	// media relay) until ctx is cancelled; a non-nil error is fatal.
	Run(ctx context.Context) error
	// Close releases resources after Run has returned.
	Close()
}

// Deregisterer is a Service that registered itself with another (MC with
// GC, MH with MC): as shutdown starts it stops heartbeating and withdraws
// its registrations, so that no new work is sent to a pod on its way out
// (otherwise it stays listed until its registration's TTL runs out).
type Deregisterer interface {
	Deregister(ctx context.Context)
}

// DeregisterTimeout bounds the withdrawal at shutdown.
const DeregisterTimeout = 3 * time.Second

// Server owns both listeners of one service.
type Server struct {
	common    Common
	kit       *Kit
	svc       Service
	readiness *Readiness
	opsLn     net.Listener
	apiLn     net.Listener
	ops, api  *http.Server
}

// NewServer binds both listeners, so a port conflict is reported before
// anything starts.
func NewServer(c Common, kit *Kit, svc Service) (*Server, error) {
	cert, err := serverCertificate(c)
	if err != nil {
		return nil, err
	}
	s := &Server{common: c, kit: kit, svc: svc}
	s.readiness = NewReadiness(kit.Registry, c.ReadyTimeout, svc.Checks())
	metrics := newHTTPMetrics(kit.Registry)

	opsMux := http.NewServeMux()
	opsMux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness never touches a dependency (ADR-0012).
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "OK")
	})
	opsMux.Handle("GET /ready", s.readiness)
	opsMux.Handle("GET /metrics", promhttp.HandlerFor(kit.Registry, promhttp.HandlerOpts{}))

	apiMux := NewMux()
	svc.Routes(apiMux)

	c = c.withAPIDefaults()
	errorLog := slog.NewLogLogger(kit.Logger.Handler(), slog.LevelWarn)
	s.ops = &http.Server{Handler: metrics.instrument("ops", opsMux), ErrorLog: errorLog,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	// Slow clients are cut off: ReadTimeout bounds the whole request
	// (headers and body, and the TLS handshake), WriteTimeout the response;
	// over HTTP/2 both apply per stream. No API handler streams.
	s.api = &http.Server{
		Handler:           metrics.instrument("api", c.fault.wrap(apiMux.ServeMux), apiMux.patterns...),
		ReadHeaderTimeout: min(10*time.Second, c.APIReadTimeout),
		ReadTimeout:       c.APIReadTimeout,
		WriteTimeout:      c.APIWriteTimeout,
		IdleTimeout:       c.APIIdleTimeout,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:          errorLog,
	}
	rejected := prometheus.NewCounter(prometheus.CounterOpts{Name: "api_connections_rejected_total",
		Help: "API connections closed at accept because their source IP had API_MAX_CONNS_PER_SOURCE open."})
	kit.Registry.MustRegister(rejected)
	if s.opsLn, err = net.Listen("tcp", c.OpsAddr); err != nil {
		return nil, fmt.Errorf("ops listener (OPS_ADDR=%s): %w", c.OpsAddr, err)
	}
	if s.apiLn, err = net.Listen("tcp", c.APIAddr); err != nil {
		s.opsLn.Close()
		return nil, fmt.Errorf("API listener (API_ADDR=%s): %w", c.APIAddr, err)
	}
	s.apiLn = limitPerSource(s.apiLn, c.APIMaxConnsPerSrc, rejected)
	c.fault.announce(kit.Logger)
	return s, nil
}

// withAPIDefaults fills zero API bounds with the defaults.
func (c Common) withAPIDefaults() Common {
	if c.APIReadTimeout == 0 {
		c.APIReadTimeout = DefaultAPIReadTimeout
	}
	if c.APIWriteTimeout == 0 {
		c.APIWriteTimeout = DefaultAPIWriteTimeout
	}
	if c.APIIdleTimeout == 0 {
		c.APIIdleTimeout = DefaultAPIIdleTimeout
	}
	if c.APIMaxConnsPerSrc == 0 {
		c.APIMaxConnsPerSrc = DefaultAPIMaxConnsPerSrc
	}
	return c
}

// OpsAddr is the bound ops address.
func (s *Server) OpsAddr() net.Addr { return s.opsLn.Addr() }

// APIAddr is the bound API address.
func (s *Server) APIAddr() net.Addr { return s.apiLn.Addr() }

// Readiness exposes the aggregator (tests, embedding).
func (s *Server) Readiness() *Readiness { return s.readiness }

// ErrDrainTimeout means in-flight requests outlived SHUTDOWN_GRACE.
var ErrDrainTimeout = errors.New("in-flight requests did not drain within SHUTDOWN_GRACE")

// Run serves until ctx is cancelled (SIGTERM in production), then drains:
// /ready turns 503 at once, the API keeps serving for SHUTDOWN_DELAY while
// endpoints update, in-flight requests finish within SHUTDOWN_GRACE, and
// background work stops.
func (s *Server) Run(ctx context.Context) error {
	log := s.kit.Logger
	started := time.Now()
	svcCtx, stopSvc := context.WithCancel(context.Background())
	defer stopSvc()

	fatal := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.svc.Run(svcCtx); err != nil && svcCtx.Err() == nil {
			fatal <- fmt.Errorf("service: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.ops.Serve(s.opsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("ops listener: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.api.ServeTLS(s.apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("API listener: %w", err)
		}
	}()
	log.Info("serving", "version", Version, "revision", Revision, "ops_addr", s.OpsAddr().String(), "api_addr", s.APIAddr().String(),
		"dependencies", s.readiness.Names(), "startup_ms", time.Since(started).Milliseconds())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutdown requested: not ready from now on, draining",
			"delay", s.common.ShutdownDelay.String(), "grace", s.common.ShutdownGrace.String())
	case runErr = <-fatal:
		log.Error("fatal error, shutting down", "error", runErr.Error())
	}
	s.readiness.StartDraining()
	drainStart := time.Now()
	if d, ok := s.svc.(Deregisterer); ok {
		dctx, cancel := context.WithTimeout(context.Background(), DeregisterTimeout)
		d.Deregister(dctx)
		cancel()
	}
	if runErr == nil && s.common.ShutdownDelay > 0 {
		time.Sleep(s.common.ShutdownDelay)
	}
	graceCtx, cancel := context.WithTimeout(context.Background(), s.common.ShutdownGrace)
	defer cancel()
	if err := s.api.Shutdown(graceCtx); err != nil {
		_ = s.api.Close()
		if runErr == nil {
			runErr = ErrDrainTimeout
		}
	}
	stopSvc()
	_ = s.ops.Shutdown(graceCtx)
	wg.Wait()
	s.svc.Close()
	if runErr != nil {
		log.Error("stopped with error", "error", runErr.Error(), "drain_ms", time.Since(drainStart).Milliseconds())
		return runErr
	}
	log.Info("stopped cleanly", "drain_ms", time.Since(drainStart).Milliseconds())
	return nil
}

// Program describes one service binary: its configuration and constructor.
type Program[C any] struct {
	Name string
	Load func(*envconf.Loader) C
	New  func(ctx context.Context, kit *Kit, cfg C) (Service, error)
}

// Main runs a Program as a process and returns its exit code: 2 for bad
// configuration (one line per problem, naming the variable), 1 for a
// start-up or runtime failure, 0 after a clean shutdown.
func Main[C any](p Program[C]) int {
	env := envconf.New()
	common := LoadCommon(env, p.Name)
	cfg := p.Load(env)
	if err := env.Err(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(os.Stderr, "%s: configuration: %s\n", p.Name, line)
		}
		return 2
	}
	kit, err := NewKit(common, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	svc, err := p.New(ctx, kit, cfg)
	if err != nil {
		kit.Logger.Error("start-up failed", "error", err.Error())
		return 1
	}
	srv, err := NewServer(common, kit, svc)
	if err != nil {
		svc.Close()
		kit.Logger.Error("start-up failed", "error", err.Error())
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		return 1
	}
	return 0
}
