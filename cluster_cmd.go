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
)

func runNodeImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node-image", stderr)
	cache := fs.String("cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy and the Debian roots are kept")
	mirror := fs.String("mirror", "", "Debian mirror for debootstrap (default: the host's apt mirror)")
	rebuild := fs.Bool("rebuild", false, "build even if an image with the same inputs exists")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r, err := nodeimage.Build(ctx, nodeimage.Options{CacheDir: *cache, Mirror: *mirror, Progress: stdout, Rebuild: *rebuild})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, r.Image)
	return nil
}

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"cluster needs a subcommand: up, down, list, status or kubeconfig"}
	}
	fs := newFlags("cluster "+args[0], stderr)
	name := fs.String("name", "", "cluster name (default: the kind config's, dark-tower)")
	state := fs.String("state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	var o kindcluster.Options
	if args[0] == "up" {
		fs.StringVar(&o.ConfigPath, "config", "infra/local/kind-config.yaml", "kind config (kind.x-k8s.io/v1alpha4)")
		fs.IntVar(&o.Nodes, "nodes", 0, "1: one node standing in for every pool (0: the config's nodes)")
		fs.StringVar(&o.NodeImage, "node-image", kindcluster.NodeImageAuto, "auto (upstream kindest/node if it can be pulled, else built here), built, upstream, or an image reference")
		fs.StringVar(&o.Mirror, "mirror", "", "Debian mirror for a node image built here (default: the host's apt mirror)")
		fs.StringVar(&o.CacheDir, "cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy are kept")
		fs.DurationVar(&o.Wait, "wait", 3*time.Minute, "how long to wait for the nodes to be Ready")
		fs.BoolFunc("no-host-ports", "drop the config's fixed host port mappings (media on host UDP 8443), so several clusters can share a host", func(string) error {
			o.NoHostPorts = true
			return nil
		})
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	clusterName := *name
	if clusterName == "" && args[0] != "up" && args[0] != "list" {
		cfg, err := kindcluster.LoadConfig("infra/local/kind-config.yaml")
		if err != nil {
			return err
		}
		clusterName = cfg.Name
	}
	switch args[0] {
	case "up":
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
	case "down":
		return kindcluster.Down(ctx, clusterName, *state, stdout)
	case "list":
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
	case "status":
		nodes, err := kindcluster.Status(ctx, clusterName)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tIMAGE")
		for _, n := range nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Role, n.State, n.Image)
		}
		tw.Flush()
		if down := notRunning(nodes); down != "" {
			return fmt.Errorf("cluster %s: node(s) not running: %s", clusterName, down)
		}
		return nil
	case "kubeconfig":
		path := kindcluster.KubeconfigPath(*state, clusterName)
		if _, err := os.Stat(path); err != nil {
			// A cluster made elsewhere (another state dir, kind's own CLI).
			if err := kindcluster.ExportKubeconfig(clusterName, path); err != nil {
				return fmt.Errorf("no kubeconfig for cluster %s (is it up? cluster list shows the clusters): %w", clusterName, err)
			}
		}
		fmt.Fprintln(stdout, path)
		return nil
	}
	return usageError{fmt.Sprintf("cluster %q: use up, down, list, status or kubeconfig", args[0])}
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

func runPreview(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"preview needs a subcommand: up, down, list or reap"}
	}
	fs := newFlags("preview "+args[0], stderr)
	state := fs.String("state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	pr := fs.Int("pr", 0, "the pull request number")
	var o preview.Options
	ttl := fs.Duration("ttl", preview.DefaultTTL, "up: how long the preview lives; reap: remove previews older than this")
	if args[0] == "up" {
		fs.StringVar(&o.Commit, "commit", "", "the commit previewed (default: this checkout's HEAD)")
		fs.StringVar(&o.Dist, "dist", "dist", "the build-all output to deploy (host platform images)")
		fs.StringVar(&o.NodeImage, "node-image", kindcluster.NodeImageAuto, "auto, built, upstream or an image reference")
		fs.StringVar(&o.CacheDir, "cache-dir", upstream.DefaultCacheDir(), "where components built from the Go module proxy are kept")
		fs.StringVar(&o.Mirror, "mirror", "", "Debian mirror for images built here")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "up":
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
	case "down":
		return preview.Down(ctx, *pr, *state, stdout)
	case "list":
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
	case "reap":
		reaped, err := preview.Reap(ctx, *ttl, time.Now(), *state, stdout)
		fmt.Fprintf(stdout, "preview: %d preview(s) reaped\n", len(reaped))
		return err
	}
	return usageError{fmt.Sprintf("preview %q: use up, down, list or reap", args[0])}
}
