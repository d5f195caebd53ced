// Command dagger-check compile-checks the Dagger module offline (make
// dagger-check); see internal/daggercheck.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/darktower/delivery/internal/daggercheck"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root, err := os.Getwd()
	if err == nil {
		cache, cerr := os.UserCacheDir()
		if cerr != nil {
			cache = os.TempDir()
		}
		err = daggercheck.Run(ctx, daggercheck.Options{Root: root, CacheDir: filepath.Join(cache, "darktower", "dagger-codegen"), Progress: os.Stdout})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dagger-check:", err)
		os.Exit(1)
	}
}
