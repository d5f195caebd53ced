// Package simtest starts one simulated cluster for a package's tests.
package simtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/darktower/delivery/pipelines/sim"
)

// Main builds the tools if needed (once per machine), starts a cluster in
// a temporary directory, hands it to set, runs the tests, stops the
// cluster and exits with the tests' status.
func Main(m *testing.M, set func(*sim.State)) {
	ctx := context.Background()
	tools, err := sim.EnsureTools(ctx, sim.DefaultCacheDir(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "these tests need the simulated cluster:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "darktower-sim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s, err := sim.Up(ctx, filepath.Join(dir, "cluster"), tools, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim up:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	set(s)
	code := m.Run()
	_ = sim.Down(s.Dir, os.Stderr)
	os.RemoveAll(dir)
	os.Exit(code)
}
