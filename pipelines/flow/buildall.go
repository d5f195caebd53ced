// Package flow composes the stages into the pipeline's jobs. Each flow is
// what one CLI command (and the Dagger function of the same name) runs.
package flow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/dockerload"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
	"github.com/darktower/delivery/pipelines/sign"
	"github.com/darktower/delivery/pipelines/source"
)

// BuildAllOptions are build-all's inputs, as the CLI flags give them.
type BuildAllOptions struct {
	Root      string   // repository root
	Services  []string // empty: all
	Images    string   // the specs' directory, relative to Root or absolute ("" = DefaultImages: the services; PlatformImages: Flagger, Traefik); the base lock is always images/'s
	Platforms []string // empty: each spec's own
	Out       string   // output directory (dist)
	Base      string   // "auto" (default: locked, else skeleton), "locked", "skeleton", "oci-layout:PATH" or an image reference
	CacheDir  string   // where fetched bases are kept ("" = build.DefaultCacheDir())
	CABundle  string   // skeleton's CA bundle (host's when empty)
	Version   string   // overrides the git-derived version
	SourceURL string   // org.opencontainers.image.source and the provenance's source ("" = from the checkout: source.Info.URL)
	Push      string   // registry/repository prefix to publish to ("" = build only)
	Load      bool     // load the host platform's images into the local Docker engine
	Jobs      int
	// SBOMCacheDir keeps every image's SBOMs by image digest and pipeline,
	// so an unchanged image is not cataloged again ("" = no reuse).
	SBOMCacheDir string
	// StageCacheDir keeps the scan's raw findings (under scan/, by image,
	// SBOM and vulnerability data) and the signatures and attestations
	// (under sign/, by image, key and signed content), so what did not
	// change is not redone ("" = no reuse). Keyless signatures are never
	// reused.
	StageCacheDir string
	// The vulnerability gate: a prepared Trivy DB directory (air-gapped;
	// empty: download into DBCacheDir), the threshold (default CRITICAL),
	// the exceptions file (default Root/.trivyignore.yaml) and the age
	// past which the DB is reported stale (default 72 h).
	VulnDB string
	// VulnSource: scan.SourceAuto ("" too: Trivy's DB when it can be had,
	// else the Go vulnerability database), SourceTrivy or SourceGoVulnDB.
	VulnSource   string
	DBCacheDir   string
	DBRepository string // where Trivy's DB is downloaded from ("" = Trivy's defaults)
	Severity     string
	Exceptions   string
	DBMaxAge     time.Duration
	// Signing: a cosign private key (file or env://NAME; password in
	// COSIGN_PASSWORD); none: the machine's development key in DevKeyDir.
	// NoSign skips signing (only when asked).
	Key       string
	DevKeyDir string
	NoSign    bool
	Keyless   sign.KeylessOptions // Fulcio and Rekor for keyless signing in CI
	// GoTags: build tags for a test build (the services' chaosfragile and
	// canaryfault knobs); refused with Push and by Release.
	GoTags   []string
	Env      func(string) string // environment lookup (SOURCE_DATE_EPOCH, registry credentials)
	Progress io.Writer
	release  bool // set by Release: the development key is refused
}

// BuildAll runs catalog → base → build → sbom → scan (gate) → sign →
// outputs → push (images, then signatures and attestations) / load. On any error nothing in
// Out claims success (manifest.json is removed first, written last).
func BuildAll(ctx context.Context, o BuildAllOptions) (*build.Manifest, error) {
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, f+"\n", a...)
		}
	}
	start := time.Now()
	if lower := registry.LowercasePrefix(o.Push); lower != o.Push {
		say("push: %s lowercased to %s (registries refuse capitals in repository names)", o.Push, lower)
		o.Push = lower
	}
	if err := errors.Join(publishProblems(ctx, o)...); err != nil {
		return nil, err
	}
	cat, err := catalog.Load(o.imagesDir())
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
	if o.SourceURL == "" {
		o.SourceURL = src.URL
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
	// The gate's inputs first: a build that cannot be scanned is not
	// started (fail closed, before minutes of compiling). Its settings come
	// from infra/ci/image-scan.yaml; --severity and --exceptions override.
	gate, err := scan.LoadGateConfig(filepath.Join(o.Root, scan.ConfigFile))
	if err != nil {
		return nil, err
	}
	if o.Severity == "" {
		o.Severity = gate.Threshold
	}
	if _, err := scan.ParseThreshold(o.Severity); err != nil {
		return nil, err
	}
	say("scan: gate settings from %s: blocks %s and above", gate.Source, strings.ToUpper(o.Severity))
	exceptionsPath := o.Exceptions
	if exceptionsPath == "" {
		exceptionsPath = filepath.Join(o.Root, gate.Exceptions)
	}
	exceptions, err := scan.LoadExceptions(exceptionsPath, time.Now())
	if err != nil {
		return nil, err
	}
	for _, p := range exceptions.Problems {
		say("scan: warning: %s", p)
	}
	vsrc, err := openVulnSource(ctx, o, say)
	if err != nil {
		return nil, err
	}
	if vsrc.trivy != nil {
		defer scan.CloseDB()
	}
	dbInfo := vsrc.trivy
	key, keyless, err := signingKey(ctx, o, env)
	if err != nil {
		return nil, err
	}
	if dbInfo != nil && dbInfo.Stale != "" {
		say("scan: warning: %s", dbInfo.Stale)
	}
	t := time.Now()
	base, err := resolveBase(ctx, o, specs, all, src.Epoch, env, say)
	if err != nil {
		return nil, err
	}
	say("base: %s %s resolved in %s", base.Name, base.Digest, time.Since(t).Round(time.Millisecond))
	// The images' binaries are stripped; govulncheck reads the same link
	// with its symbol table, kept here until the scan is done.
	symbols, err := os.MkdirTemp("", "darktower-symbols-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(symbols)
	say("build: %d service(s), version %s, revision %.12s, SOURCE_DATE_EPOCH %d", len(specs), src.Version, src.Revision, src.Epoch.Unix())
	res, err := build.Run(ctx, build.Options{Root: o.Root, Specs: specs, Platforms: platforms, Base: base,
		Epoch: src.Epoch, Version: src.Version, Revision: src.Revision, Source: o.SourceURL, Jobs: o.Jobs, Progress: o.Progress, Previous: previous, GoTags: o.GoTags,
		SymbolsDir: symbols})
	if err != nil {
		return nil, err
	}
	m, err := build.WriteLayout(o.Out, res, src.Version, src.Revision, src.Epoch)
	if err != nil {
		return nil, err
	}
	m.GoTags = o.GoTags
	m.Stages = append(m.Stages, stageTime("build", res.Build))
	sboms, err := sbom.Generate(ctx, sbom.Options{Images: res.Images, Out: o.Out, Created: src.Epoch, SourceURL: o.SourceURL,
		CacheDir: o.SBOMCacheDir, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	m.Stages = append(m.Stages, stageTime("sbom", sboms.Took))
	say("sbom: %d document pair(s) (SPDX %s, CycloneDX %s), %d reused, in %s", len(sboms.Documents), sbom.SPDXVersion, sbom.CycloneDXVersion,
		sboms.Reused, sboms.Took.Round(time.Millisecond))
	scanOpts := scan.Options{Documents: sboms.Documents, Threshold: o.Severity, Exceptions: exceptions, Progress: o.Progress,
		Source: vsrc.name, SourceVersion: vsrc.version, SourceDate: vsrc.date, GoData: vsrc.goData,
		DataKey: vsrc.version + " " + scan.DBIdentity(dbInfo), CacheDir: stageDir(o.StageCacheDir, "scan"),
		GoCheck: func(ctx context.Context, service, platform string) ([]*scan.GoVuln, error) {
			data, err := vsrc.govulnData(ctx, say)
			if err != nil {
				return nil, err
			}
			p, err := catalog.ParsePlatform(platform)
			if err != nil {
				return nil, err
			}
			bin, err := res.SymbolsBinary(ctx, service, p)
			if err != nil {
				return nil, err
			}
			t := time.Now()
			vulns, err := scan.CheckBinary(ctx, data, bin)
			if err == nil {
				say("scan: govulncheck %s %s: %d advisory(ies) for its modules, %d with a reachable symbol, in %s", service, platform, len(vulns),
					countReachable(vulns), time.Since(t).Round(time.Millisecond))
			}
			return vulns, err
		}}
	scanned, gateErr := scan.Scan(ctx, scanOpts)
	if scanned == nil {
		return nil, gateErr
	}
	m.Stages = append(m.Stages, stageTime("scan", scanned.Took))
	if rel, err := filepath.Rel(o.Root, o.imagesDir()); err == nil && !strings.HasPrefix(rel, "..") {
		scanned.SpecDir = filepath.ToSlash(rel)
	}
	reports, err := scan.WriteReports(o.Out, scanned)
	if err != nil {
		return nil, err
	}
	record(m, sboms, scanned)
	m.Scan = &build.ScanRecord{Threshold: scanned.Threshold, Source: scanned.Source, SourceVersion: scanned.SourceVersion,
		DBUpdatedAt: scanned.SourceDate.Format(time.RFC3339), Reports: reports.Trivy, SARIF: reports.SARIF}
	if gateErr != nil {
		// The summary and reports say why; no manifest claims the build.
		if err := build.WriteSummary(o.Out, m, res, supplySection(m)+scan.Markdown(scanned, dbInfo, exceptions)); err != nil {
			return nil, err
		}
		return nil, gateErr
	}
	gateName := scanned.Threshold
	if scanned.Source == scan.SourceGoVulnDB {
		gateName = "reachability"
	}
	say("scan: passed the %s gate in %s (findings of %d of %d image(s) reused, every image judged now); reports in %s", gateName, scanned.Took.Round(time.Millisecond),
		scanned.Reused, len(scanned.Images), filepath.Join(o.Out, scan.Dir))
	var signedImages []*sign.Signed
	if keyless {
		// Fulcio's certificate lives 10 minutes: it is asked for now,
		// after the build and the scan, right before signing.
		if key, err = sign.KeylessKey(ctx, o.Keyless); err != nil {
			return nil, err
		}
		say("sign: keyless: a certificate from %s for this job's identity, obtained now for signing", key.Source)
	}
	if key != nil {
		signedRes, err := sign.Sign(ctx, sign.Options{Images: res.Images, Documents: sboms.Documents, Scan: scanned, ScanDB: dbInfo, Key: key,
			Out: o.Out, Repository: o.Push, Progress: o.Progress, CacheDir: stageDir(o.StageCacheDir, "sign"), Provenance: sign.Provenance{
				BuilderID: builderID(env), SourceURL: o.SourceURL, Revision: src.Revision, Started: start, Finished: time.Now(),
				Parameters: o.provenanceParameters(src.Version, scanned.Threshold)}})
		if err != nil {
			return nil, err
		}
		signedImages = signedRes.Images
		m.Stages = append(m.Stages, stageTime("sign", signedRes.Took))
		say("sign: %d image(s), %d signature(s) and attestations reused, in %s", len(signedRes.Images), signedRes.Reused, signedRes.Took.Round(time.Millisecond))
		for i, s := range signedRes.Images {
			res.Images[i].Signature = &build.SignatureRecord{Signature: s.SignatureDigest, Attestations: s.AttestationDigest,
				Predicates: sign.Predicates, Key: key.Source, Development: key.Development}
		}
		if key.Development {
			say("sign: signed with this machine's DEVELOPMENT key %s (for trying the flow, not for releases: pass --key, or sign keyless in CI)", key.Source)
		}
	} else {
		say("sign: skipped (--no-sign)")
	}
	if err := build.Finish(o.Out, m, res, supplySection(m)+scan.Markdown(scanned, dbInfo, exceptions)); err != nil {
		return nil, err
	}
	if o.Push != "" {
		pushed, err := registry.Push(ctx, res.Images, o.Push, registry.Keychain(env, o.Push), o.Progress)
		if err != nil {
			return nil, err
		}
		for i, p := range pushed {
			res.Images[i].Pushed = p.Ref
		}
		if err := sign.Publish(ctx, signedImages, o.Push, registry.Keychain(env, o.Push), o.Progress); err != nil {
			return nil, err
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

// The image spec sets: build-all's default (the services) and the
// platform's third-party programs the clusters run (Flagger, Traefik).
const (
	DefaultImages  = "images"
	PlatformImages = "images/platform"
)

// imagesDir is the spec directory o builds.
func (o BuildAllOptions) imagesDir() string {
	switch {
	case o.Images == "":
		return filepath.Join(o.Root, DefaultImages)
	case filepath.IsAbs(o.Images):
		return o.Images
	default:
		return filepath.Join(o.Root, o.Images)
	}
}

// provenanceParameters are the build parameters the provenance records;
// the spec set only when it is not the default (so the services'
// statements, and their cached signatures, are as before).
func (o BuildAllOptions) provenanceParameters(version, severity string) map[string]string {
	p := map[string]string{"services": strings.Join(o.Services, ","), "platforms": strings.Join(o.Platforms, ","),
		"version": version, "base": o.Base, "severity": severity}
	if o.Images != "" && filepath.Clean(o.Images) != DefaultImages {
		p["images"] = filepath.ToSlash(o.Images)
	}
	return p
}

// signingKey is the key to sign with: --key; else keyless where the job
// has an OIDC identity (GitHub Actions with id-token: write) — then only
// keyless is true, the certificate is obtained right before signing;
// else this machine's development key, never for what is published; nil
// with --no-sign.
func signingKey(ctx context.Context, o BuildAllOptions, env func(string) string) (key *sign.Key, keyless bool, err error) {
	switch {
	case o.NoSign:
		return nil, false, nil
	case o.Key != "":
		key, err = sign.LoadKey(o.Key, env)
		return key, false, err
	case sign.KeylessAvailable(ctx):
		return nil, true, nil
	case o.Push != "" || o.release:
		return nil, false, errDevelopmentKey
	default:
		dir := o.DevKeyDir
		if dir == "" {
			dir = sign.DefaultDevKeyDir()
		}
		key, err = sign.DevKey(dir)
		return key, false, err
	}
}

// publishProblems is what anything that publishes (--push, release) must
// not have, found before anything is built: a signature by this machine's
// development key, which nobody can verify.
func publishProblems(ctx context.Context, o BuildAllOptions) []error {
	var problems []error
	for _, t := range o.GoTags {
		if !goTag.MatchString(t) {
			problems = append(problems, fmt.Errorf("--go-tags: %q is not a Go build tag (letters, digits, _ and .)", t))
		}
	}
	if len(o.GoTags) > 0 && (o.Push != "" || o.release) {
		problems = append(problems, fmt.Errorf("--go-tags %s makes a test build (fault knobs compiled in): it is never published or released; drop --go-tags, or --push", strings.Join(o.GoTags, ",")))
	}
	if (o.Push == "" && !o.release) || o.NoSign || o.Key != "" || sign.KeylessAvailable(ctx) {
		return problems
	}
	return append(problems, errDevelopmentKey)
}

var goTag = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)

// builderID names who ran the build, for the provenance.
func builderID(env func(string) string) string {
	if ref := env("GITHUB_WORKFLOW_REF"); ref != "" {
		return env("GITHUB_SERVER_URL") + "/" + ref
	}
	host, _ := os.Hostname()
	return "local:" + host
}

// DefaultStageCacheDir is where the CLI keeps scan findings and
// signatures for reuse.
func DefaultStageCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "darktower", "stages")
}

// stageDir is a stage's part of --stage-cache-dir ("" = none).
func stageDir(dir, stage string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, stage)
}

func stageTime(name string, d time.Duration) build.StageTime {
	return build.StageTime{Stage: name, Seconds: d.Round(time.Millisecond).Seconds()}
}

// record puts each platform image's SBOMs and vulnerability counts into
// the manifest.
func record(m *build.Manifest, sboms *sbom.Result, scanned *scan.Result) {
	for _, im := range m.Images {
		for i := range im.Platforms {
			p := &im.Platforms[i]
			for _, d := range sboms.Documents {
				if d.Service == im.Service && d.Platform == p.Platform.String() {
					p.SBOM = &build.SBOMRecord{SPDX: d.SPDX, SPDXDigest: d.SPDXDigest, CycloneDX: d.CycloneDX, CycloneDXDigest: d.CycloneDXDigest, Packages: d.PackageCount}
				}
			}
			for _, s := range scanned.Images {
				if s.Service == im.Service && s.Platform == p.Platform.String() {
					c := s.Counts
					p.Vulnerabilities = &build.VulnCounts{Critical: c["CRITICAL"], High: c["HIGH"], Medium: c["MEDIUM"],
						Low: c["LOW"], Unknown: c["UNKNOWN"], Blocking: s.Blocking}
				}
			}
		}
	}
}

// supplySection is the summary's per-image supply-chain table.
func supplySection(m *build.Manifest) string {
	var b strings.Builder
	b.WriteString("\n## Supply chain\n\n| service | platform | image digest | SBOM packages | CRITICAL | HIGH | MEDIUM | LOW | signed |\n|---|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, im := range m.Images {
		for _, p := range im.Platforms {
			pkgs := 0
			if p.SBOM != nil {
				pkgs = p.SBOM.Packages
			}
			v := p.Vulnerabilities
			if v == nil {
				v = &build.VulnCounts{}
			}
			signedCol := "no"
			if s := im.Signature; s != nil {
				signedCol = "yes"
				if s.Development {
					signedCol = "yes (development key)"
				}
			}
			fmt.Fprintf(&b, "| %s | %s | `%s` | %d | %d | %d | %d | %d | %s |\n", im.Service, p.Platform, p.Digest, pkgs,
				v.Critical, v.High, v.Medium, v.Low, signedCol)
		}
	}
	if len(m.Stages) > 0 {
		b.WriteString("\n| stage | seconds |\n|---|---:|\n")
		for _, s := range m.Stages {
			fmt.Fprintf(&b, "| %s | %.1f |\n", s.Stage, s.Seconds)
		}
	}
	return b.String()
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
// digest in images/base.lock.json (the only step that moves a base), and
// the Dagger module's Go image (ci/main.go's goImage default) to its tag's
// current digest. Every reference is resolved before anything is written.
func UpdateBase(ctx context.Context, root string, env func(string) string, progress io.Writer) ([]build.BaseChange, error) {
	if env == nil {
		env = source.Getenv
	}
	goImage, err := build.ReadGoImagePin(root)
	if err != nil {
		return nil, err
	}
	var goImageChange *build.BaseChange
	if goImage != nil {
		digest, err := goImage.Resolve(ctx, registry.Keychain(env, ""))
		if err != nil {
			return nil, err
		}
		goImageChange = &build.BaseChange{Ref: goImage.Tag, Old: goImage.Digest, New: digest}
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
	changes, err := build.UpdateLock(ctx, dir, refs, registry.Keychain(env, ""), time.Now(), progress)
	if err != nil || goImageChange == nil {
		return changes, err
	}
	c := *goImageChange
	what := fmt.Sprintf("%s (%s, the Dagger module's Go image)", c.Ref, build.DaggerModuleFile)
	if c.Old == c.New {
		fmt.Fprintf(progressOrDiscard(progress), "update-base: %s unchanged at %s\n", what, c.New)
		return append(changes, c), nil
	}
	if err := goImage.Write(c.New); err != nil {
		return changes, fmt.Errorf("update-base: images/%s was written, %s was not: %w", build.LockFile, build.DaggerModuleFile, err)
	}
	if c.Old == "" {
		fmt.Fprintf(progressOrDiscard(progress), "update-base: %s pinned to %s\n", what, c.New)
	} else {
		fmt.Fprintf(progressOrDiscard(progress), "update-base: %s %s -> %s\n", what, c.Old, c.New)
	}
	return append(changes, c), nil
}

func progressOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
