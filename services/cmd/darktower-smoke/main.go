// Command darktower-smoke is the smoke check of a deployed Dark Tower (see
// internal/smoke): configured by SMOKE_* environment variables, it prints
// one line per check and exits 1 when any failed, 2 on bad configuration.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/smoke"
)

func main() {
	l := envconf.New()
	cfg := smoke.LoadConfig(l)
	if err := l.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "darktower-smoke:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
