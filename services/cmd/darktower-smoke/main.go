// Command darktower-smoke is the smoke check of a deployed Dark Tower (see
// internal/smoke): configured by SMOKE_* environment variables, it prints
// one line per check and exits 1 when any failed, 2 on bad configuration.
//
// With SMOKE_MODE=load it is instead a steady client of the services (the
// chaos stage's load): it runs until stopped, serving its counters on
// SMOKE_METRICS_ADDR (:8080) /metrics for Prometheus. With
// SMOKE_LOAD_ON_DEMAND=true its API rounds and media sessions wait for
// Flagger: the same address serves the canaries' pre-rollout and rollout
// webhooks (POST /v1/load/start, /v1/load/gate; see smoke.Load.Webhooks).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/smoke"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	l := envconf.New()
	cfg := smoke.LoadConfig(l)
	mode := l.String("SMOKE_MODE", "check")
	interval := l.Duration("SMOKE_LOAD_INTERVAL", 500*time.Millisecond, 50*time.Millisecond, time.Minute)
	// The canary proof's load: many API rounds at once, and no media
	// session (whose joins take tokens of their own).
	workers := l.Int("SMOKE_LOAD_WORKERS", 1, 1, 1024)
	media := l.Bool("SMOKE_LOAD_MEDIA", true)
	// Media sessions kept at once, and how long each lives before a new
	// one (a new session id, placed anew by meeting-controller) replaces
	// it: 0 keeps a session until its media-handler stops relaying.
	mediaSessions := l.Int("SMOKE_LOAD_MEDIA_SESSIONS", 1, 1, 256)
	mediaLifetime := l.Duration("SMOKE_LOAD_MEDIA_LIFETIME", 0, 0, time.Hour)
	// How often each session relays a datagram each way (0: every
	// SMOKE_LOAD_INTERVAL).
	mediaInterval := l.Duration("SMOKE_LOAD_MEDIA_INTERVAL", 0, 0, time.Minute)
	if mediaLifetime > 0 && mediaLifetime < time.Second {
		l.Problemf("SMOKE_LOAD_MEDIA_LIFETIME is malformed: expected 0 (keep each session) or a duration between 1s and 1h")
	}
	onDemand := l.Bool("SMOKE_LOAD_ON_DEMAND", false)
	// ac-service's key set fetched this many times a second, each on a new
	// connection (the traffic its partitioned rollout is judged on).
	keySetRate := l.Int("SMOKE_LOAD_KEYSET_RATE", 0, 0, 200)
	addr := l.String("SMOKE_METRICS_ADDR", ":8080")
	if err := l.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "darktower-smoke:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch mode {
	case "load":
		os.Exit(load(ctx, cfg, interval, workers, media, onDemand, keySetRate, mediaSessions, mediaLifetime, mediaInterval, addr))
	case "check":
	default:
		fmt.Fprintf(os.Stderr, "darktower-smoke: SMOKE_MODE=%q: use check (the default) or load\n", mode)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	results, err := smoke.Run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "darktower-smoke:", err)
		os.Exit(2)
	}
	if smoke.Failed(results) {
		os.Exit(1)
	}
}

func load(ctx context.Context, cfg smoke.Config, interval time.Duration, workers int, media, onDemand bool, keySetRate, mediaSessions int,
	mediaLifetime, mediaInterval time.Duration, addr string) int {
	reg := prometheus.NewRegistry()
	l := smoke.NewLoad(cfg, interval, reg)
	l.Workers, l.Media, l.OnDemand, l.KeySetRate = workers, media, onDemand, keySetRate
	l.MediaSessions, l.MediaLifetime, l.MediaInterval = mediaSessions, mediaLifetime, mediaInterval
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if onDemand {
		hooks := l.Webhooks(os.Stdout)
		mux.Handle("POST "+smoke.StartPath, hooks)
		mux.Handle("POST "+smoke.GatePath, hooks)
		fmt.Printf("darktower-smoke: API rounds on demand: POST %s (Flagger's pre-rollout webhook) starts them\n", smoke.StartPath)
	}
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "darktower-smoke:", err)
			os.Exit(2)
		}
	}()
	fmt.Printf("darktower-smoke: load every %s, metrics on %s/metrics\n", interval, addr)
	err := l.Run(ctx, os.Stdout)
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	if err != nil {
		fmt.Fprintln(os.Stderr, "darktower-smoke:", err)
		return 2
	}
	return 0
}
