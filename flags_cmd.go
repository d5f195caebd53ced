package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/darktower/delivery/pipelines/flags"
	"github.com/darktower/delivery/pipelines/upstream"
	"github.com/spf13/pflag"
)

func runFlagsSync(fs *pflag.FlagSet) action {
	catalog := fs.String("catalog", flags.CatalogPath, "the flag catalogue")
	endpoints := fs.String("etcd", "", "etcd endpoints, host:port[,host:port...] (required)")
	prefix := fs.String("prefix", flags.DefaultPrefix, "etcd key prefix of the flags")
	env := fs.String("env", "", "environment: keys under <prefix><env>/ and each flag's values.<env> (empty: keys under <prefix>, defaults)")
	dryRun := fs.Bool("dry-run", false, "print the diff, write nothing")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if *endpoints == "" {
			return usageError{"flags sync needs --etcd host:port[,host:port...]"}
		}
		c, err := flags.Load(*catalog)
		if err != nil {
			return err
		}
		d, err := flags.Sync(ctx, c, flags.SyncOptions{Endpoints: csv(*endpoints), Prefix: *prefix, Env: *env, DryRun: *dryRun})
		d.Print(stdout)
		return err
	}
}

func runFlagsGenerate(fs *pflag.FlagSet) action {
	catalog := fs.String("catalog", flags.CatalogPath, "the flag catalogue")
	out := fs.String("out", flags.GeneratedPath, "the generated Go file")
	check := fs.Bool("check", false, "write nothing; fail if the file is out of date")
	return func(_ context.Context, stdout, _ io.Writer) error {
		c, err := flags.Load(*catalog)
		if err != nil {
			return err
		}
		src, err := flags.Generate(c)
		if err != nil {
			return err
		}
		if *check {
			have, _ := os.ReadFile(*out)
			if !bytes.Equal(have, src) {
				return fmt.Errorf("%s is out of date with %s: run `go run . flags generate`", *out, *catalog)
			}
			fmt.Fprintf(stdout, "%s is up to date\n", *out)
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, src, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%d flags)\n", *out, len(c.Flags))
		return nil
	}
}

// runToolsPathEtcd prints the etcd binary's path, building it once from
// the Go module proxy (pipelines/upstream): the services module's tests
// find etcd through it (scripts/test.sh exports
// DARKTOWER_ETCD=$(go run . tools-path etcd)). Progress goes to stderr so
// stdout is the path alone.
func runToolsPathEtcd(fs *pflag.FlagSet) action {
	cache := fs.String("cache-dir", upstream.DefaultCacheDir(), "where built tools are kept")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		b, err := upstream.EtcdProgram.Build(ctx, *cache, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, b.Binary)
		return nil
	}
}
