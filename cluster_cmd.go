package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/source"
	"github.com/darktower/delivery/pipelines/upstream"
	"github.com/spf13/pflag"
)

func runNodeImage(fs *pflag.FlagSet) action {
	cache := fs.String("cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy and the Debian roots are kept")
	mirror := fs.String("mirror", "", "Debian mirror for debootstrap (default: the host's apt mirror)")
	rebuild := fs.Bool("rebuild", false, "build even if an image with the same inputs exists")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		r, err := nodeimage.Build(ctx, nodeimage.Options{CacheDir: *cache, Mirror: *mirror, Progress: stdout, Rebuild: *rebuild})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, r.Image)
		return nil
	}
}

// clusterFlags declares the flags every cluster subcommand takes.
func clusterFlags(fs *pflag.FlagSet) (name, state *string) {
	name = fs.String("name", "", "cluster name (default: the kind config's, dark-tower)")
	state = fs.String("state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	return name, state
}

// clusterName is --name, or the kind config's cluster.
func clusterName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	cfg, err := kindcluster.LoadConfig("infra/local/kind-config.yaml")
	if err != nil {
		return "", err
	}
	return cfg.Name, nil
}

func runClusterUp(fs *pflag.FlagSet) action {
	name, state := clusterFlags(fs)
	var o kindcluster.Options
	fs.StringVar(&o.ConfigPath, "config", "infra/local/kind-config.yaml", "kind config (kind.x-k8s.io/v1alpha4)")
	fs.IntVar(&o.Nodes, "nodes", 0, "1: one node standing in for every pool (0: the config's nodes)")
	fs.StringVar(&o.NodeImage, "node-image", kindcluster.NodeImageAuto, "auto (upstream kindest/node if it can be pulled, else built here), built, upstream, or an image reference")
	fs.StringVar(&o.Mirror, "mirror", "", "Debian mirror for a node image built here (default: the host's apt mirror)")
	fs.StringVar(&o.CacheDir, "cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy are kept")
	fs.DurationVar(&o.Wait, "wait", 3*time.Minute, "how long to wait for the nodes to be Ready")
	fs.BoolVar(&o.NoHostPorts, "no-host-ports", false, "drop the config's fixed host port mappings (media on host UDP 8443), so several clusters can share a host")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		o.Name, o.StateDir, o.Progress = *name, *state, stdout
		c, err := kindcluster.Up(ctx, o)
		if err != nil {
			return err
		}
		for _, s := range c.Steps {
			fmt.Fprintf(stdout, "  %-40s %s\n", s.Name, s.Duration.Round(100*time.Millisecond))
		}
		fmt.Fprintf(stdout, "export KUBECONFIG=%s\n", c.Kubeconfig)
		return nil
	}
}

func runClusterDown(fs *pflag.FlagSet) action {
	name, state := clusterFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		n, err := clusterName(*name)
		if err != nil {
			return err
		}
		return kindcluster.Down(ctx, n, *state, stdout)
	}
}

func runClusterList(fs *pflag.FlagSet) action {
	clusterFlags(fs) // accepted as before, though a list needs neither
	return func(ctx context.Context, stdout, _ io.Writer) error {
		names, err := kindcluster.List(ctx)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			fmt.Fprintln(stdout, "no kind clusters")
		}
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
		return nil
	}
}

func runClusterStatus(fs *pflag.FlagSet) action {
	name, _ := clusterFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		n, err := clusterName(*name)
		if err != nil {
			return err
		}
		nodes, err := kindcluster.Status(ctx, n)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tIMAGE")
		for _, node := range nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", node.Name, node.Role, node.State, node.Image)
		}
		tw.Flush()
		if down := notRunning(nodes); down != "" {
			return fmt.Errorf("cluster %s: node(s) not running: %s", n, down)
		}
		return nil
	}
}

func runClusterKubeconfig(fs *pflag.FlagSet) action {
	name, state := clusterFlags(fs)
	return func(_ context.Context, stdout, _ io.Writer) error {
		n, err := clusterName(*name)
		if err != nil {
			return err
		}
		path := kindcluster.KubeconfigPath(*state, n)
		if _, err := os.Stat(path); err != nil {
			// A cluster made elsewhere (another state dir, kind's own CLI).
			if err := kindcluster.ExportKubeconfig(n, path); err != nil {
				return fmt.Errorf("no kubeconfig for cluster %s (is it up? cluster list shows the clusters): %w", n, err)
			}
		}
		fmt.Fprintln(stdout, path)
		return nil
	}
}

func notRunning(nodes []kindcluster.NodeStatus) string {
	var down []string
	for _, n := range nodes {
		if n.State != "running" {
			down = append(down, n.Name+" ("+n.State+")")
		}
	}
	return strings.Join(down, ", ")
}

// previewFlags declares the flags every preview subcommand takes.
func previewFlags(fs *pflag.FlagSet) (state *string, pr *int, ttl *time.Duration) {
	state = fs.String("state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	pr = fs.Int("pr", 0, "the pull request number")
	ttl = fs.Duration("ttl", preview.DefaultTTL, "up: how long the preview lives; reap: remove previews older than this")
	return state, pr, ttl
}

func runPreviewUp(fs *pflag.FlagSet) action {
	state, pr, ttl := previewFlags(fs)
	var o preview.Options
	fs.StringVar(&o.Commit, "commit", "", "the commit previewed (default: this checkout's HEAD)")
	fs.StringVar(&o.Dist, "dist", "dist", "the build-all output to deploy (host platform images)")
	fs.StringVar(&o.NodeImage, "node-image", kindcluster.NodeImageAuto, "auto, built, upstream or an image reference")
	fs.StringVar(&o.CacheDir, "cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy are kept")
	fs.StringVar(&o.Mirror, "mirror", "", "Debian mirror for images built here")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		if o.Commit == "" {
			info, err := source.Read(root, os.Getenv)
			if err != nil {
				return err
			}
			o.Commit = info.Revision
		}
		o.PR, o.Root, o.TTL, o.StateDir, o.Progress = *pr, root, *ttl, *state, stdout
		info, res, err := preview.Up(ctx, o)
		if err != nil {
			return err
		}
		for _, s := range res.Steps {
			fmt.Fprintf(stdout, "  %-56s %s\n", s.Name, s.Duration.Round(100*time.Millisecond))
		}
		fmt.Fprintf(stdout, "preview: PR %d (%s) %s, expires %s\n  %s\n", info.PR, info.Commit, info.State, info.Expires.Format(time.RFC3339), info.Endpoint)
		if info.State != "ready" {
			return fmt.Errorf("preview %s is not ready: %s", info.Cluster, info.State)
		}
		return nil
	}
}

func runPreviewDown(fs *pflag.FlagSet) action {
	state, pr, _ := previewFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error { return preview.Down(ctx, *pr, *state, stdout) }
}

func runPreviewList(fs *pflag.FlagSet) action {
	state, _, _ := previewFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		list, err := preview.List(ctx, *state)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PR\tCLUSTER\tAGE\tCOMMIT\tEXPIRES\tSTATE")
		for _, p := range list {
			age := "?"
			if !p.Created.IsZero() {
				age = time.Since(p.Created).Round(time.Minute).String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%.12s\t%s\t%s\n", p.PR, p.Cluster, age, p.Commit, p.Expires.Format(time.RFC3339), p.State)
		}
		return tw.Flush()
	}
}

func runPreviewReap(fs *pflag.FlagSet) action {
	state, _, ttl := previewFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		reaped, err := preview.Reap(ctx, *ttl, time.Now(), *state, stdout)
		fmt.Fprintf(stdout, "preview: %d preview(s) reaped\n", len(reaped))
		return err
	}
}
