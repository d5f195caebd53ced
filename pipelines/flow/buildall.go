// Package flow composes the stages into the pipeline's jobs. Each flow is
// what one CLI command (and the Dagger function of the same name) runs.
package flow

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/dockerload"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/source"
)

// BuildAllOptions are build-all's inputs, as the CLI flags give them.
type BuildAllOptions struct {
	Root      string   // repository root
	Services  []string // empty: all
	Platforms []string // empty: each spec's own
	Out       string   // output directory (dist)
	Base      string   // "locked" (default), "skeleton", "oci-layout:PATH" or an image reference
	CacheDir  string   // where fetched bases are kept ("" = build.DefaultCacheDir())
	CABundle  string   // skeleton's CA bundle (host's when empty)
	Version   string   // overrides the git-derived version
	SourceURL string   // org.opencontainers.image.source
	Push      string   // registry/repository prefix to publish to ("" = build only)
	Load      bool     // load the host platform's images into the local Docker engine
	Jobs      int
	Env       func(string) string // environment lookup (SOURCE_DATE_EPOCH, registry credentials)
	Progress  io.Writer
}

// BuildAll runs catalog → base → build → outputs. On any error nothing in
// Out claims success (manifest.json is removed first, written last).
func BuildAll(ctx context.Context, o BuildAllOptions) (*build.Manifest, error) {
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, f+"\n", a...)
		}
	}
	start := time.Now()
	cat, err := catalog.Load(filepath.Join(o.Root, "images"))
	if err != nil {
		return nil, err
	}
	specs, err := cat.Select(o.Services)
	if err != nil {
		return nil, err
	}
	var platforms []catalog.Platform
	for _, p := range o.Platforms {
		pp, err := catalog.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("--platforms: %w", err)
		}
		platforms = append(platforms, pp)
	}
	env := o.Env
	if env == nil {
		env = source.Getenv
	}
	src, err := source.Read(o.Root, env)
	if err != nil {
		return nil, err
	}
	if o.Version != "" {
		src.Version = o.Version
	}
	previous := build.ReadPrevious(o.Out) // before PrepareOutput removes its manifest
	if err := build.PrepareOutput(o.Out); err != nil {
		return nil, err
	}
	all := platforms
	if len(all) == 0 {
		seen := map[catalog.Platform]bool{}
		for _, s := range specs {
			for _, p := range s.Platforms {
				if !seen[p] {
					seen[p] = true
					all = append(all, p)
				}
			}
		}
	}
	if o.Load {
		if err := dockerload.Preflight(ctx, all); err != nil {
			return nil, err
		}
	}
	t := time.Now()
	specBase, err := commonBase(specs)
	if err != nil && (o.Base == build.BaseLocked || o.Base == "") {
		return nil, err
	}
	cacheDir := o.CacheDir
	if cacheDir == "" {
		cacheDir = build.DefaultCacheDir()
	}
	base, err := build.ResolveBase(ctx, build.BaseOptions{Value: o.Base, SpecBase: specBase, ImagesDir: filepath.Join(o.Root, "images"),
		Platforms: all, CABundle: o.CABundle, Epoch: src.Epoch, Keychain: registry.Keychain(env), CacheDir: cacheDir})
	if err != nil {
		return nil, err
	}
	say("base: %s %s resolved in %s", base.Name, base.Digest, time.Since(t).Round(time.Millisecond))
	say("build: %d service(s), version %s, revision %.12s, SOURCE_DATE_EPOCH %d", len(specs), src.Version, src.Revision, src.Epoch.Unix())
	res, err := build.Run(ctx, build.Options{Root: o.Root, Specs: specs, Platforms: platforms, Base: base,
		Epoch: src.Epoch, Version: src.Version, Revision: src.Revision, Source: o.SourceURL, Jobs: o.Jobs, Progress: o.Progress, Previous: previous})
	if err != nil {
		return nil, err
	}
	m, err := build.WriteOutputs(o.Out, res, src.Version, src.Revision, src.Epoch)
	if err != nil {
		return nil, err
	}
	if o.Push != "" {
		pushed, err := registry.Push(ctx, res.Images, o.Push, registry.Keychain(env), o.Progress)
		if err != nil {
			return nil, err
		}
		for i, p := range pushed {
			res.Images[i].Pushed = p.Ref
		}
	}
	if o.Load {
		loaded, err := dockerload.Load(ctx, res.Images, dockerload.HostPlatform(), o.Progress)
		if err != nil {
			return nil, err
		}
		for i, l := range loaded {
			res.Images[i].Loaded = l.ImageID
		}
	}
	if o.Push != "" || o.Load {
		if err := build.WriteManifest(o.Out, m); err != nil {
			return nil, err
		}
	}
	say("build-all: %d image(s) in %s, total %s; see %s", len(m.Images), filepath.Join(o.Out, build.LayoutDir),
		time.Since(start).Round(time.Millisecond), filepath.Join(o.Out, build.SummaryFile))
	return m, nil
}

// commonBase is the one base reference the specs share: a build assembles
// every image on the same base.
func commonBase(specs []*catalog.Spec) (string, error) {
	var ref string
	for _, s := range specs {
		if ref != "" && s.Base != ref {
			return "", fmt.Errorf("specs name different bases (%s: %s, others: %s); one build uses one base: build them separately with --services", s.Name, s.Base, ref)
		}
		ref = s.Base
	}
	return ref, nil
}

// UpdateBase pins every base the specs in images/ name to its current
// digest in images/base.lock.json (the only step that moves a base).
func UpdateBase(ctx context.Context, root string, env func(string) string, progress io.Writer) ([]build.BaseChange, error) {
	if env == nil {
		env = source.Getenv
	}
	dir := filepath.Join(root, "images")
	cat, err := catalog.Load(dir)
	if err != nil {
		return nil, err
	}
	specs, err := cat.Select(nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var refs []string
	for _, s := range specs {
		if !seen[s.Base] {
			seen[s.Base] = true
			refs = append(refs, s.Base)
		}
	}
	return build.UpdateLock(ctx, dir, refs, registry.Keychain(env), time.Now(), progress)
}
