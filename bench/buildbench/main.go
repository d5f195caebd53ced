// Command buildbench is `make bench-build`: it builds the four services'
// images with build-all and with ko (github.com/google/ko, installed from
// the Go module proxy into a cache outside the repository; nothing of ko
// is committed), on the same base, cold and warm, in one run, next to a
// plain `go build` of the same binaries. It prints wall-time ratios,
// image-size ratios and whether each tool's output is reproducible.
//
// "Cold" is a fresh Go build cache and output directory per tool (module
// downloads are shared and not counted); "warm" is the same command again
// with nothing changed. Reproducibility: a second copy of the repository
// in another directory, built after the others, must give the same digests.
//
// --smoke is the same run on one service and one platform with the
// machine's own Go build cache (so "cold" is not cold): it proves the
// benchmark still works, in seconds, and the test command runs it; its
// times are not benchmark figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/darktower/delivery/bench/internal/benchkit"
	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/source"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var (
	services  = benchkit.Services
	platforms = benchkit.Platforms
)

const ldflags = benchkit.Ldflags

var ko = benchkit.GoTool{Name: "ko", Package: "github.com/google/ko"}

func main() {
	koVersion := flag.String("ko-version", "v0.19.1", "ko version to install from the Go module proxy")
	keep := flag.Bool("keep", false, "keep the work directory")
	smoke := flag.Bool("smoke", false, "one service, one platform, the machine's Go build cache: checks that the benchmark runs (times are not figures)")
	flag.Parse()
	if *smoke {
		services, platforms = services[:1], platforms[:1]
	}
	if err := run(*koVersion, *keep, *smoke); err != nil {
		fmt.Fprintln(os.Stderr, "bench-build:", err)
		os.Exit(1)
	}
}

func env(extra ...string) []string { return benchkit.Env(extra...) }

func sh(dir string, environ []string, name string, args ...string) error {
	_, err := benchkit.Run(dir, environ, nil, name, args...)
	return err
}

// tool is one way of building the images.
type tool struct {
	name  string
	build func(repo, out, gocache string) error
	// digests reads the built images back: service → platform → manifest digest.
	digests func(out string) (map[string]map[string]imageInfo, error)
}

type imageInfo struct {
	digest string
	size   int64 // compressed bytes of all layers, config and manifest excluded
}

func run(koVersion string, keep, smoke bool) error {
	root, err := benchkit.RepoRoot("bench-build")
	if err != nil {
		return err
	}
	ko.Version = koVersion
	koBin, err := ko.Install()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "darktower-bench-build-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	src, err := source.Read(root, source.Getenv)
	if err != nil {
		return err
	}
	epoch := fmt.Sprint(src.Epoch.Unix())
	reg := benchkit.ServeRegistry()
	defer reg.Close()
	baseRef, err := reg.PushSkeletonBase(platforms, src.Epoch)
	if err != nil {
		return err
	}
	darktower := filepath.Join(work, "darktower")
	if err := sh(root, env(), "go", "build", "-o", darktower, "."); err != nil {
		return err
	}
	// build-all also writes SBOMs, runs the vulnerability gate and signs
	// (ko's side: --sbom=none); an empty prepared DB keeps the bench
	// offline. Its reuse caches live in the work directory: cold is cold.
	vulnDB := filepath.Join(work, "vuln-db")
	if err := vulndbtest.Write(vulnDB, time.Now()); err != nil {
		return err
	}
	koConfig := filepath.Join(work, "ko-config")
	if err := writeKoConfig(koConfig, baseRef); err != nil {
		return err
	}
	var mains []string
	for _, s := range services {
		mains = append(mains, "./cmd/"+s)
	}
	var platformList []string
	for _, p := range platforms {
		platformList = append(platformList, p.String())
	}
	// The smoke run compiles with the machine's Go build cache: warm, so
	// it takes seconds (its "cold" is not cold).
	sharedCache := ""
	if smoke {
		if sharedCache, err = benchkit.GoCache(); err != nil {
			return err
		}
	}
	tools := []tool{
		{name: "go build", build: func(repo, out, gocache string) error {
			for _, p := range platforms {
				args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(out, p.Arch) + "/"}, mains...)
				if err := sh(filepath.Join(repo, "services"), env("GOCACHE="+gocache, "GOOS="+p.OS, "GOARCH="+p.Arch), "go", args...); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: "build-all", build: func(repo, out, gocache string) error {
			return sh(repo, env("GOCACHE="+gocache, "SOURCE_DATE_EPOCH="+epoch), darktower, "build-all",
				"--base", baseRef, "--out", out, "--cache-dir", out+"-base-cache", "--sbom-cache-dir", out+"-sbom-cache", "--stage-cache-dir", out+"-stage-cache", "--version", "bench", "--source-url", "https://example.invalid/src", "--vuln-db", vulnDB,
				"--services", strings.Join(services, ","), "--platforms", strings.Join(platformList, ","))
		}, digests: buildAllDigests},
		{name: "ko", build: func(repo, out, gocache string) error {
			args := append([]string{"build", "--push=false", "--sbom=none", "--base-import-paths", "--oci-layout-path", out,
				"--platform", strings.Join(platformList, ",")}, mains...)
			return sh(filepath.Join(repo, "services"), env("GOCACHE="+gocache, "SOURCE_DATE_EPOCH="+epoch,
				"KO_DOCKER_REPO=bench.invalid/darktower", "KO_CONFIG_PATH="+koConfig), koBin, args...)
		}, digests: layoutDigests},
	}

	repoA, repoB := filepath.Join(work, "repo-a"), filepath.Join(work, "repo-b")
	for _, d := range []string{repoA, repoB} {
		if err := benchkit.CopyRepo(root, d); err != nil {
			return err
		}
	}
	type result struct {
		cold, warm   time.Duration
		images       map[string]map[string]imageInfo
		reproducible string
	}
	results := map[string]*result{}
	fmt.Printf("bench-build: %d services × %d platforms, base %s, %d CPUs, %s\n", len(services), len(platforms), baseRef, runtime.NumCPU(), runtime.Version())
	if smoke {
		fmt.Printf("SMOKE RUN (--smoke): one service, one platform, the machine's Go build cache %s: it checks that the benchmark works; its times are not figures\n", sharedCache)
	}
	for _, t := range tools {
		r := &result{}
		gocache := filepath.Join(work, "gocache-"+strings.ReplaceAll(t.name, " ", "-"))
		if smoke {
			gocache = sharedCache
		}
		out := filepath.Join(work, "out-"+strings.ReplaceAll(t.name, " ", "-"))
		if r.cold, err = benchkit.Timed(func() error { return t.build(repoA, out, gocache) }); err != nil {
			return fmt.Errorf("%s cold: %w", t.name, err)
		}
		fmt.Printf("  %-10s cold %6.1fs\n", t.name, r.cold.Seconds())
		if r.warm, err = benchkit.Timed(func() error { return t.build(repoA, out, gocache) }); err != nil {
			return fmt.Errorf("%s warm: %w", t.name, err)
		}
		fmt.Printf("  %-10s warm %6.1fs\n", t.name, r.warm.Seconds())
		if t.digests != nil {
			if r.images, err = t.digests(out); err != nil {
				return fmt.Errorf("%s: reading its output: %w", t.name, err)
			}
			outB := out + "-copy"
			if err := t.build(repoB, outB, gocache); err != nil {
				return fmt.Errorf("%s in a second directory: %w", t.name, err)
			}
			again, err := t.digests(outB)
			if err != nil {
				return err
			}
			r.reproducible = "yes"
			for svc, plats := range r.images {
				for p, info := range plats {
					if again[svc][p].digest != info.digest {
						r.reproducible = fmt.Sprintf("NO (%s %s: %.19s vs %.19s)", svc, p, info.digest, again[svc][p].digest)
					}
				}
			}
		}
		results[t.name] = r
	}
	gb, ba, k := results["go build"], results["build-all"], results["ko"]
	fmt.Printf("\n| run | go build | build-all | ko | build-all / go build | build-all / ko |\n|---|---:|---:|---:|---:|---:|\n")
	fmt.Printf("| cold | %.1f s | %.1f s | %.1f s | %.2f | %.2f |\n", gb.cold.Seconds(), ba.cold.Seconds(), k.cold.Seconds(), ratio(ba.cold, gb.cold), ratio(ba.cold, k.cold))
	fmt.Printf("| warm | %.1f s | %.1f s | %.1f s | %.2f | %.2f |\n", gb.warm.Seconds(), ba.warm.Seconds(), k.warm.Seconds(), ratio(ba.warm, gb.warm), ratio(ba.warm, k.warm))
	fmt.Printf("\n| image | platform | build-all | ko | build-all / ko |\n|---|---|---:|---:|---:|\n")
	var totalB, totalK int64
	for _, svc := range services {
		for _, p := range platforms {
			b, kk := ba.images[svc][p.String()], k.images[svc][p.String()]
			totalB += b.size
			totalK += kk.size
			fmt.Printf("| %s | %s | %s | %s | %.3f |\n", svc, p, mib(b.size), mib(kk.size), float64(b.size)/float64(kk.size))
		}
	}
	fmt.Printf("| all | | %s | %s | %.3f |\n", mib(totalB), mib(totalK), float64(totalB)/float64(totalK))
	fmt.Printf("\nreproducible (second copy of the repository, other directory): build-all %s; ko %s\n", ba.reproducible, k.reproducible)
	fmt.Printf("overhead beyond go build: cold %+.1f%%, warm %+.1f s\n", (ratio(ba.cold, gb.cold)-1)*100, (ba.warm - gb.warm).Seconds())
	return nil
}

func ratio(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

func writeKoConfig(dir, baseRef string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "defaultBaseImage: %s\nbuilds:\n", baseRef)
	for _, s := range services {
		fmt.Fprintf(&b, "- id: %s\n  dir: .\n  main: ./cmd/%s\n  flags: [-trimpath]\n  ldflags: [%q]\n", s, s, ldflags)
	}
	return os.WriteFile(filepath.Join(dir, ".ko.yaml"), []byte(b.String()), 0o644)
}

// buildAllDigests reads dist/manifest.json's images from the layout.
func buildAllDigests(out string) (map[string]map[string]imageInfo, error) {
	return layoutDigests(filepath.Join(out, build.LayoutDir))
}

// layoutDigests reads every index in an OCI layout; the service is the
// last path element of the image's title (build-all) or of ko's ref name.
func layoutDigests(dir string) (map[string]map[string]imageInfo, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	root, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	rm, err := root.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]imageInfo{}
	for _, d := range rm.Manifests {
		// build-all's layout also carries each image's cosign signature
		// and attestations (image manifests, no entrypoint); ko writes a
		// one-platform build as an image, not an index.
		if d.MediaType.IsImage() {
			img, err := root.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			cf, err := img.ConfigFile()
			if err != nil {
				return nil, err
			}
			if len(cf.Config.Entrypoint) == 0 {
				continue // a signature or attestation
			}
			svc, info, err := imageOf(img, d.Digest)
			if err != nil {
				return nil, err
			}
			if out[svc] == nil {
				out[svc] = map[string]imageInfo{}
			}
			out[svc][cf.OS+"/"+cf.Architecture] = info
			continue
		}
		if !d.MediaType.IsIndex() {
			continue
		}
		idx, err := root.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, m := range im.Manifests {
			if !m.MediaType.IsImage() || m.Platform == nil {
				continue
			}
			img, err := idx.Image(m.Digest)
			if err != nil {
				return nil, err
			}
			svc, info, err := imageOf(img, m.Digest)
			if err != nil {
				return nil, err
			}
			if out[svc] == nil {
				out[svc] = map[string]imageInfo{}
			}
			out[svc][m.Platform.OS+"/"+m.Platform.Architecture] = info
		}
	}
	if len(out) != len(services) {
		keys := make([]string, 0, len(out))
		for k := range out {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%s holds images of %v, want %v", dir, keys, services)
	}
	return out, nil
}

// imageOf is the service an image runs and its digest and layers' size.
func imageOf(img v1.Image, digest v1.Hash) (string, imageInfo, error) {
	svc, err := serviceOf(img)
	if err != nil {
		return "", imageInfo{}, err
	}
	mf, err := img.Manifest()
	if err != nil {
		return "", imageInfo{}, err
	}
	var size int64
	for _, l := range mf.Layers {
		size += l.Size
	}
	return svc, imageInfo{digest: digest.String(), size: size}, nil
}

// serviceOf names the service an image runs, from its entrypoint binary.
func serviceOf(img v1.Image) (string, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	if len(cf.Config.Entrypoint) == 0 {
		return "", fmt.Errorf("image without an entrypoint")
	}
	return filepath.Base(cf.Config.Entrypoint[0]), nil
}
