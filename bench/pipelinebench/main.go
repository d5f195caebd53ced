// Command pipelinebench is `make bench-pipeline`: the whole job — build,
// SBOMs, the vulnerability gate, signatures and attestations, published to
// a registry — for the four services on both platforms, done by build-all
// and by the chain a user would otherwise script with the upstream CLIs at
// the versions this repository pins:
//
//	ko build → syft (SPDX + CycloneDX per platform image) → trivy sbom
//	(the same DB, CRITICAL gate) → cosign sign + cosign attest (the same
//	attestations build-all makes: CycloneDX per platform, vulnerabilities,
//	SLSA provenance)
//
// cold and warm (the median of three warm runs), in one run, next to a plain `go build` of the same
// binaries. Every tool is installed from the Go module proxy into a cache
// outside the repository (trivy with Go 1.26 and GOEXPERIMENT=jsonv2,
// since Go 1.27 breaks its build). It prints wall time and peak memory
// (the largest resident set of any process of the job) and the ratios
// build-all / chain and build-all / go build.
//
// Cold: a fresh Go build cache, output and reuse caches per job, and a
// fresh repository in the registry (module downloads are shared and not
// counted). Warm: the same job again with nothing changed; the chain is a
// plain script, so it catalogues, scans and signs again (that is what
// scripting the CLIs gives), while ko reuses its build cache and the
// registry's blobs.
//
// goreleaser v2 (also from the proxy) is the third peer, doing what it can
// do offline: the same binaries, the same images with ko's library (and
// ko's SPDX SBOM of the Go modules), pushed, and signed with cosign through
// its docker_signs. It has no CycloneDX or base-package SBOM of an image,
// no vulnerability gate and no attestations of its own, so its figure is
// for less work; a release needs a Git repository with a tag and a remote,
// which the benchmark makes in its copy.
//
// --smoke is one service on one platform with the machine's Go build cache:
// it proves the benchmark still works (the test command runs it); its
// times are not figures.
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/darktower/delivery/bench/internal/benchkit"
	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/source"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const sourceURL = "https://example.invalid/darktower/delivery"

func main() {
	keep := flag.Bool("keep", false, "keep the work directory")
	smoke := flag.Bool("smoke", false, "one service, one platform, the machine's Go build cache: checks that the benchmark runs (times are not figures)")
	koVersion := flag.String("ko-version", "v0.19.1", "ko version to install from the Go module proxy")
	flag.StringVar(&goreleaserVersion, "goreleaser-version", goreleaserVersion, "goreleaser v2 version to install from the Go module proxy")
	flag.Parse()
	services, platforms := benchkit.Services, benchkit.Platforms
	if *smoke {
		services, platforms = services[:1], platforms[:1]
	}
	b := &bench{services: services, platforms: platforms, smoke: *smoke}
	if err := b.run(*koVersion, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench-pipeline:", err)
		os.Exit(1)
	}
}

type bench struct {
	services  []string
	platforms []catalog.Platform
	smoke     bool

	root, work string
	epoch      string
	reg        *benchkit.Registry
	baseRef    string
	vulnCache  string // Trivy's cache dir: the DB under db/
	key        string // cosign.key (password in keyPassword)
	bins       map[string]string
}

const keyPassword = "bench"

// warmRounds is how many warm runs each job's warm figure is the median of.
const warmRounds = 3

func walls(us []benchkit.Usage) string {
	var s []string
	for _, u := range us {
		s = append(s, fmt.Sprintf("%.1f", u.Wall.Seconds()))
	}
	return strings.Join(s, " / ") + " s"
}

// goreleaserVersion: v2.18.2 and newer need packages the proxy does not serve.
var goreleaserVersion = "v2.15.1"

// pinned is the version go.mod pins for a module.
func pinned(root, module string) (string, error) {
	out, err := exec.Command("go", "list", "-C", root, "-m", "-f", "{{.Version}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (b *bench) run(koVersion string, keep bool) error {
	var err error
	if b.root, err = benchkit.RepoRoot("bench-pipeline"); err != nil {
		return err
	}
	tools := []benchkit.GoTool{{Name: "ko", Package: "github.com/google/ko", Version: koVersion},
		{Name: "goreleaser", Package: "github.com/goreleaser/goreleaser/v2", Version: goreleaserVersion}}
	for _, t := range []struct{ name, module, pkg string }{
		{"syft", "github.com/anchore/syft", "github.com/anchore/syft/cmd/syft"},
		{"trivy", "github.com/aquasecurity/trivy", "github.com/aquasecurity/trivy/cmd/trivy"},
		{"cosign", "github.com/sigstore/cosign/v2", "github.com/sigstore/cosign/v2/cmd/cosign"},
	} {
		v, err := pinned(b.root, t.module)
		if err != nil {
			return err
		}
		tool := benchkit.GoTool{Name: t.name, Package: t.pkg, Version: v}
		if t.name == "trivy" {
			// Trivy needs encoding/json/v2, which Go 1.27 changed under it:
			// the machine's Go 1.26 with the experiment builds it.
			tool.Env = []string{"GOTOOLCHAIN=local", "GOEXPERIMENT=jsonv2"}
		}
		tools = append(tools, tool)
	}
	b.bins = map[string]string{}
	for _, t := range tools {
		if b.bins[t.Name], err = t.Install(); err != nil {
			return err
		}
	}
	if b.work, err = os.MkdirTemp("", "darktower-bench-pipeline-"); err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(b.work)
	}
	src, err := source.Read(b.root, source.Getenv)
	if err != nil {
		return err
	}
	b.epoch = fmt.Sprint(src.Epoch.Unix())
	b.reg = benchkit.ServeRegistry()
	defer b.reg.Close()
	if b.baseRef, err = b.reg.PushSkeletonBase(b.platforms, src.Epoch); err != nil {
		return err
	}
	b.bins["darktower"] = filepath.Join(b.work, "darktower")
	if _, err := benchkit.Run(b.root, benchkit.Env(), nil, "go", "build", "-o", b.bins["darktower"], "."); err != nil {
		return err
	}
	// One prepared DB for both (offline; Trivy's cache layout, db/).
	b.vulnCache = filepath.Join(b.work, "trivy-cache")
	if err := vulndbtest.Write(filepath.Join(b.vulnCache, "db"), time.Now()); err != nil {
		return err
	}
	keyDir := filepath.Join(b.work, "key")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return err
	}
	if _, err := benchkit.Run(keyDir, append(os.Environ(), "COSIGN_PASSWORD="+keyPassword), nil, b.bins["cosign"], "generate-key-pair"); err != nil {
		return err
	}
	b.key = filepath.Join(keyDir, "cosign.key")
	repo := filepath.Join(b.work, "repo")
	if err := benchkit.CopyRepo(b.root, repo); err != nil {
		return err
	}
	if err := b.goreleaserRepo(repo); err != nil {
		return err
	}
	sharedCache := ""
	if b.smoke {
		if sharedCache, err = benchkit.GoCache(); err != nil {
			return err
		}
	}

	fmt.Printf("bench-pipeline: %d services × %d platforms, base %s, %d CPUs, %s\n", len(b.services), len(b.platforms), b.baseRef, runtime.NumCPU(), runtime.Version())
	for _, t := range tools {
		fmt.Printf("  peer %s %s\n", t.Name, t.Version)
	}
	if b.smoke {
		fmt.Printf("SMOKE RUN (--smoke): one service, one platform, the machine's Go build cache %s: it checks that the benchmark works; its times are not figures\n", sharedCache)
	}
	jobs := []job{
		{name: "go build", run: b.goBuild},
		{name: "build-all", run: b.buildAll},
		{name: "chain", run: b.chain},
		{name: "goreleaser", run: b.goreleaser},
	}
	results := map[string][2]benchkit.Usage{}
	for _, j := range jobs {
		gocache := filepath.Join(b.work, "gocache-"+strings.ReplaceAll(j.name, " ", "-"))
		if b.smoke {
			gocache = sharedCache
		}
		out := filepath.Join(b.work, "out-"+strings.ReplaceAll(j.name, " ", "-"))
		var r [2]benchkit.Usage
		if r[0], err = j.run(repo, out, gocache); err != nil {
			return fmt.Errorf("%s cold: %w", j.name, err)
		}
		fmt.Printf("  %-10s cold %6.1fs (CPU %6.1fs), peak RSS %s\n", j.name, r[0].Wall.Seconds(), r[0].CPU.Seconds(), benchkit.MiB(r[0].PeakRSS))
		// Warm runs are short, so a neighbour's burst of load skews one:
		// the median of warmRounds.
		var warm []benchkit.Usage
		for range warmRounds {
			u, err := j.run(repo, out, gocache)
			if err != nil {
				return fmt.Errorf("%s warm: %w", j.name, err)
			}
			warm = append(warm, u)
		}
		slices.SortFunc(warm, func(a, b benchkit.Usage) int { return cmp.Compare(a.Wall, b.Wall) })
		r[1] = warm[len(warm)/2]
		fmt.Printf("  %-10s warm %6.1fs (median of %d: %s; CPU %.1fs), peak RSS %s\n", j.name, r[1].Wall.Seconds(), len(warm), walls(warm), r[1].CPU.Seconds(), benchkit.MiB(r[1].PeakRSS))
		results[j.name] = r
	}
	gb, ba, ch, gr := results["go build"], results["build-all"], results["chain"], results["goreleaser"]
	fmt.Printf("\n| run | go build | build-all | CLI chain | goreleaser (less work) | build-all / chain | build-all / go build | build-all / goreleaser |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, phase := range []string{"cold", "warm"} {
		fmt.Printf("| %s | %.1f s | %.1f s | %.1f s | %.1f s | %.2f | %.2f | %.2f |\n", phase, gb[i].Wall.Seconds(), ba[i].Wall.Seconds(), ch[i].Wall.Seconds(), gr[i].Wall.Seconds(),
			ba[i].Wall.Seconds()/ch[i].Wall.Seconds(), ba[i].Wall.Seconds()/gb[i].Wall.Seconds(), ba[i].Wall.Seconds()/gr[i].Wall.Seconds())
	}
	// CPU time moves far less than wall time when other work shares the
	// cores: the steadier comparison on a busy machine.
	for i, phase := range []string{"cold", "warm"} {
		fmt.Printf("| CPU, %s | %.1f s | %.1f s | %.1f s | %.1f s | %.2f | %.2f | %.2f |\n", phase, gb[i].CPU.Seconds(), ba[i].CPU.Seconds(), ch[i].CPU.Seconds(), gr[i].CPU.Seconds(),
			ba[i].CPU.Seconds()/ch[i].CPU.Seconds(), ba[i].CPU.Seconds()/gb[i].CPU.Seconds(), ba[i].CPU.Seconds()/gr[i].CPU.Seconds())
	}
	for i, phase := range []string{"cold", "warm"} {
		fmt.Printf("| peak RSS, %s | %s | %s | %s | %s | %.2f | | |\n", phase, benchkit.MiB(gb[i].PeakRSS), benchkit.MiB(ba[i].PeakRSS), benchkit.MiB(ch[i].PeakRSS),
			benchkit.MiB(gr[i].PeakRSS), float64(ba[i].PeakRSS)/float64(ch[i].PeakRSS))
	}
	return nil
}

// job is one way of doing the whole job; run returns its cost.
type job struct {
	name string
	run  func(repo, out, gocache string) (benchkit.Usage, error)
}

func (b *bench) platformList() string {
	var ps []string
	for _, p := range b.platforms {
		ps = append(ps, p.String())
	}
	return strings.Join(ps, ",")
}

// goBuild is the reference: the same binaries with build-all's link
// flags, one go build per platform.
func (b *bench) goBuild(repo, out, gocache string) (benchkit.Usage, error) {
	var total benchkit.Usage
	for _, p := range b.platforms {
		args := []string{"build", "-trimpath", "-ldflags", benchkit.Ldflags, "-o", filepath.Join(out, p.Arch) + "/"}
		for _, s := range b.services {
			args = append(args, "./cmd/"+s)
		}
		u, err := benchkit.Run(filepath.Join(repo, "services"), benchkit.Env("GOCACHE="+gocache, "GOOS="+p.OS, "GOARCH="+p.Arch), nil, "go", args...)
		if err != nil {
			return total, err
		}
		total.Add(u)
	}
	return total, nil
}

// buildAll is the pipeline's own job, published to the same registry.
func (b *bench) buildAll(repo, out, gocache string) (benchkit.Usage, error) {
	return benchkit.Run(repo, benchkit.Env("GOCACHE="+gocache, "SOURCE_DATE_EPOCH="+b.epoch, "COSIGN_PASSWORD="+keyPassword), nil, b.bins["darktower"], "build-all",
		"--base", b.baseRef, "--out", out, "--cache-dir", out+"-base-cache", "--sbom-cache-dir", out+"-sbom-cache", "--stage-cache-dir", out+"-stage-cache",
		"--version", "bench", "--source-url", sourceURL, "--vuln-db", b.vulnCache, "--key", b.key, "--push", b.reg.Host+"/buildall",
		"--services", strings.Join(b.services, ","), "--platforms", b.platformList())
}

// chain is the job as a user would script it with the upstream CLIs,
// step by step (each step's processes one after another, as a script
// runs them).
func (b *bench) chain(repo, out, gocache string) (benchkit.Usage, error) {
	var total benchkit.Usage
	step := func(dir string, environ []string, stdout io.Writer, tool string, args ...string) error {
		u, err := benchkit.Run(dir, environ, stdout, b.bins[tool], args...)
		total.Add(u)
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return total, err
	}
	koConfig := filepath.Join(out, "ko-config")
	if err := b.writeKoConfig(koConfig); err != nil {
		return total, err
	}
	// 1. ko build, pushed (cosign signs what is in a registry).
	var refs bytes.Buffer
	args := []string{"build", "--sbom=none", "--base-import-paths", "--platform", b.platformList()}
	for _, s := range b.services {
		args = append(args, "./cmd/"+s)
	}
	if err := step(filepath.Join(repo, "services"), benchkit.Env("GOCACHE="+gocache, "SOURCE_DATE_EPOCH="+b.epoch,
		"KO_DOCKER_REPO="+b.reg.Host+"/chain", "KO_CONFIG_PATH="+koConfig), &refs, "ko", args...); err != nil {
		return total, err
	}
	images := strings.Fields(refs.String())
	if len(images) != len(b.services) {
		return total, fmt.Errorf("ko printed %d image references, want %d: %q", len(images), len(b.services), refs.String())
	}
	cosignEnv := append(os.Environ(), "COSIGN_PASSWORD="+keyPassword)
	noNet := append(os.Environ(), "SYFT_CHECK_FOR_APP_UPDATE=false", "TRIVY_DISABLE_TELEMETRY=true", "TRIVY_SKIP_VERSION_CHECK=true")
	for _, image := range images {
		svc := filepath.Base(strings.SplitN(image, "@", 2)[0])
		dir := filepath.Join(out, svc)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return total, err
		}
		platformRefs, err := platformImages(image)
		if err != nil {
			return total, err
		}
		var attestations [][2]string // predicate file, type
		for _, p := range b.platforms {
			ref := platformRefs[p.String()]
			if ref == "" {
				return total, fmt.Errorf("%s has no %s image", image, p)
			}
			spdx, cdx := filepath.Join(dir, p.Arch+".spdx.json"), filepath.Join(dir, p.Arch+".cdx.json")
			// 2. syft: both formats in one catalogue.
			if err := step(dir, noNet, nil, "syft", "scan", "registry:"+ref, "-o", "spdx-json="+spdx, "-o", "cyclonedx-json="+cdx); err != nil {
				return total, err
			}
			// 3. trivy sbom: the gate (exit 1 on CRITICAL), the same DB.
			report := filepath.Join(dir, p.Arch+".trivy.json")
			if err := step(dir, noNet, nil, "trivy", "sbom", "--cache-dir", b.vulnCache, "--skip-db-update", "--offline-scan",
				"--severity", "CRITICAL", "--exit-code", "1", "--format", "json", "--output", report, cdx); err != nil {
				return total, err
			}
			attestations = append(attestations, [2]string{cdx, "cyclonedx"})
			vuln, err := vulnPredicate(report, dir, p.Arch)
			if err != nil {
				return total, err
			}
			if p == b.platforms[0] {
				attestations = append(attestations, [2]string{vuln, "vuln"})
			}
		}
		prov, err := provenance(dir, image)
		if err != nil {
			return total, err
		}
		attestations = append(attestations, [2]string{prov, "slsaprovenance1"})
		// 4. cosign: sign the index, attest each predicate (no
		// transparency log: offline, as build-all with a key).
		if err := step(dir, cosignEnv, nil, "cosign", "sign", "--yes", "--key", b.key, "--tlog-upload=false", image); err != nil {
			return total, err
		}
		for _, a := range attestations {
			if err := step(dir, cosignEnv, nil, "cosign", "attest", "--yes", "--key", b.key, "--tlog-upload=false", "--type", a[1], "--predicate", a[0], image); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

func (b *bench) writeKoConfig(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var s strings.Builder
	fmt.Fprintf(&s, "defaultBaseImage: %s\nbuilds:\n", b.baseRef)
	for _, svc := range b.services {
		fmt.Fprintf(&s, "- id: %s\n  dir: .\n  main: ./cmd/%s\n  flags: [-trimpath]\n  ldflags: [%q]\n", svc, svc, benchkit.Ldflags)
	}
	return os.WriteFile(filepath.Join(dir, ".ko.yaml"), []byte(s.String()), 0o644)
}

// platformImages maps an index's platforms to their image references (a
// one-platform ko build is an image, not an index).
func platformImages(image string) (map[string]string, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(ref)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		out[cf.OS+"/"+cf.Architecture] = image
		return out, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, m := range im.Manifests {
		if m.Platform != nil {
			out[m.Platform.OS+"/"+m.Platform.Architecture] = ref.Context().Digest(m.Digest.String()).String()
		}
	}
	return out, nil
}

// vulnPredicate wraps trivy's report in cosign's vuln predicate, as a
// script would with jq.
func vulnPredicate(report, dir, arch string) (string, error) {
	raw, err := os.ReadFile(report)
	if err != nil {
		return "", err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	pred := map[string]any{
		"invocation": map[string]any{"uri": sourceURL},
		"scanner":    map[string]any{"uri": "https://github.com/aquasecurity/trivy", "result": json.RawMessage(raw)},
		"metadata":   map[string]any{"scanStartedOn": now, "scanFinishedOn": now},
	}
	return writeJSON(filepath.Join(dir, arch+".vuln.json"), pred)
}

// provenance is a minimal SLSA v1 predicate naming the source, as a
// script would write it.
func provenance(dir, image string) (string, error) {
	pred := map[string]any{
		"buildDefinition": map[string]any{"buildType": "https://example.invalid/bench/script@v1",
			"externalParameters": map[string]any{"source": sourceURL, "image": image}},
		"runDetails": map[string]any{"builder": map[string]any{"id": "https://example.invalid/bench"}},
	}
	return writeJSON(filepath.Join(dir, "provenance.json"), pred)
}

func writeJSON(path string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o644)
}

// goreleaserRepo makes dir a Git repository with a tag and a remote (what
// `goreleaser release` insists on) and goreleaser's configuration: the
// same builds, ko images on the same base pushed to the registry, signed
// with the same key.
func (b *bench) goreleaserRepo(dir string) error {
	var c strings.Builder
	c.WriteString("version: 2\nproject_name: darktower\nbuilds:\n")
	var goarch, platforms []string
	for _, p := range b.platforms {
		goarch = append(goarch, p.Arch)
		platforms = append(platforms, p.String())
	}
	for _, s := range b.services {
		fmt.Fprintf(&c, "  - id: %s\n    dir: services\n    main: ./cmd/%s\n    binary: %s\n    env: [CGO_ENABLED=0]\n    goos: [linux]\n    goarch: [%s]\n    flags: [-trimpath]\n    ldflags: [%q]\n",
			s, s, s, strings.Join(goarch, ", "), benchkit.Ldflags)
	}
	c.WriteString("kos:\n")
	for _, s := range b.services {
		fmt.Fprintf(&c, "  - id: %s\n    build: %s\n    base_image: %s\n    repositories: [%s/goreleaser]\n    platforms: [%s]\n    base_import_paths: true\n    tags: [bench]\n    sbom: spdx\n",
			s, s, b.baseRef, b.reg.Host, strings.Join(platforms, ", "))
	}
	fmt.Fprintf(&c, `docker_signs:
  - artifacts: manifests
    cmd: %s
    args: ["sign", "--yes", "--key=%s", "--tlog-upload=false", "${artifact}"]
    env: [COSIGN_PASSWORD=%s]
archives:
  - formats: [binary]
release:
  disable: true
changelog:
  disable: true
checksum:
  disable: true
`, b.bins["cosign"], b.key, keyPassword)
	if err := os.WriteFile(filepath.Join(dir, ".goreleaser.yaml"), []byte(c.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("dist/\n"), 0o644); err != nil {
		return err
	}
	git := append(os.Environ(), "GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.invalid", "GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.invalid")
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "bench"}, {"tag", "v0.0.1-bench"},
		{"remote", "add", "origin", sourceURL + ".git"}} {
		if _, err := benchkit.Run(dir, git, nil, "git", args...); err != nil {
			return err
		}
	}
	return nil
}

// goreleaser is `goreleaser release` of the tagged copy: build, ko images
// pushed, signed; no GitHub release, no announcement.
func (b *bench) goreleaser(repo, out, gocache string) (benchkit.Usage, error) {
	return benchkit.Run(repo, benchkit.Env("GOCACHE="+gocache, "GOFLAGS="), nil, b.bins["goreleaser"], "release", "--clean", "--skip=validate,announce")
}
