// Command darktower is the Dark Tower delivery pipeline's CLI: one command
// per pipeline function, with the same names as the Dagger module's
// functions (`go run . build-all` ≡ `dagger call build-all`). Commands are
// thin shells over the stage packages in pipelines/; commands.go is the
// command tree (cobra).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/chaos"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/devsecrets"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/overlay"
	"github.com/darktower/delivery/pipelines/platform"
	"github.com/darktower/delivery/pipelines/promote"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
	"github.com/darktower/delivery/pipelines/sign"
	"github.com/darktower/delivery/pipelines/sim"
	"github.com/darktower/delivery/pipelines/source"
	"github.com/darktower/delivery/pipelines/validate"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// usageError is a mistake in how the CLI was called (exit 2); an empty
// message has already been answered with the usage text.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// csv splits a comma-separated flag value, dropping empty items.
func csv(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// buildAllFlags declares build-all's flags on fs (release shares them)
// and returns a function giving their values as options, after parsing.
func buildAllFlags(fs *pflag.FlagSet) func(root string, progress io.Writer) flow.BuildAllOptions {
	services := fs.String("services", "", "comma-separated services to build (default: all in --images)")
	images := fs.String("images", flow.DefaultImages, "the directory of image specs to build, relative to the repository: "+flow.DefaultImages+" (the services), or "+flow.PlatformImages+" (Flagger and Traefik, the canaries' third-party programs, built from their tool modules)")
	platforms := fs.String("platforms", "", "comma-separated platforms, e.g. linux/amd64 (default: each spec's own)")
	out := fs.String("out", "dist", "output directory")
	base := fs.String("base", build.BaseAuto, `base image: "auto" (locked; when that is neither cached nor fetchable and nothing is published, skeleton, announced), "locked" (the specs' base at the digest in images/base.lock.json), "skeleton" (built in, offline), oci-layout:PATH, or an image reference`)
	cacheDir := fs.String("cache-dir", build.DefaultCacheDir(), "where fetched base images are kept (an OCI layout)")
	sbomCache := fs.String("sbom-cache-dir", sbom.DefaultCacheDir(), `where each image's SBOMs are kept by image digest and pipeline, so an unchanged image is not cataloged again ("" = none)`)
	stageCache := fs.String("stage-cache-dir", flow.DefaultStageCacheDir(), `where the scan's raw findings (by image, SBOM and vulnerability data) and the signatures and attestations (by image, key and signed content; keyless ones never) are kept, so what did not change is not redone ("" = none)`)
	caBundle := fs.String("ca-bundle", "", "CA bundle for the skeleton base (default: the host's)")
	version := fs.String("version", "", "version to stamp (default: git describe, or 0.0.0-dev+<revision>)")
	sourceURL := fs.String("source-url", "", "the repository's URL for the org.opencontainers.image.source label and the provenance (default: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, else the origin remote as https)")
	push := fs.String("push", "", "publish to this registry/repository prefix, e.g. ghcr.io/darktower (credentials: "+registry.EnvUsername+"/"+registry.EnvPassword+" or the Docker config)")
	load := fs.Bool("load", false, "also load the host platform's images into the local Docker engine (docker CLI; DOCKER_HOST applies)")
	jobs := fs.Int("jobs", 2, "concurrent go builds, one per module and platform (each uses every core; two at once overlap one's link and package loading with the other's compiling: 6% off a cold build of both platforms on 2 cores)")
	vulnDB := fs.String("vuln-db", "", "a prepared Trivy DB directory (trivy.db + metadata.json, or Trivy's cache dir with them under db/): the air-gapped form; default: download Trivy's DB into --db-cache-dir")
	vulnSource := fs.String("vuln-source", scan.SourceAuto, "what judges the build: "+scan.SourceTrivy+" (Trivy's DB: OS packages and Go modules, gated on severity), "+
		scan.SourceGoVulnDB+" ("+scan.GoVulnDBModule+"@"+scan.GoVulnDBVersion+" through the Go module proxy, judged by govulncheck: Go code only, a reachable vulnerable symbol blocks), or "+
		scan.SourceAuto+" (trivy when its DB can be had, else go-vulndb, announced; a build that publishes does not fall back)")
	dbCache := fs.String("db-cache-dir", scan.DefaultCacheDir(), "where vulnerability data is kept: the downloaded Trivy DB (db/, refreshed after its NextUpdate) and the Go vulnerability database laid out for govulncheck (govulndb/)")
	dbRepository := fs.String("db-repository", "", "where Trivy's DB is downloaded from, an OCI reference like trivy's --db-repository (default: ghcr.io/aquasecurity/trivy-db:2, then mirror.gcr.io/aquasec/trivy-db:2)")
	severity := fs.String("severity", "", "block findings at or above this severity: LOW, MEDIUM, HIGH or CRITICAL (default: the lowest listed in "+scan.ConfigFile+")")
	exceptions := fs.String("exceptions", "", "accepted findings: entries of id, reason, expires (YYYY-MM-DD), optional services and packages (default: "+scan.ConfigFile+"'s ignorefile, "+scan.ExceptionsFile+")")
	dbMaxAge := fs.Duration("db-max-age", 72*time.Hour, "warn in the summary when the DB was updated longer ago than this")
	key := fs.String("key", "", "cosign private key to sign with: a file or env://NAME (password in "+sign.EnvPassword+"); default: this machine's development key")
	devKeyDir := fs.String("dev-key-dir", sign.DefaultDevKeyDir(), "where the development key pair is created once and kept")
	noSign := fs.Bool("no-sign", false, "do not sign or attest (the images are not releasable)")
	fulcioURL := fs.String("fulcio-url", sign.DefaultFulcioURL, "keyless signing (GitHub Actions with id-token: write, no --key): the Fulcio CA")
	rekorURL := fs.String("rekor-url", sign.DefaultRekorURL, "keyless signing: the Rekor transparency log")
	goTags := fs.String("go-tags", "", "comma-separated Go build tags for a test build, e.g. chaosfragile or canaryfault (the services' fault knobs); such a build is never pushed or released")
	return func(root string, progress io.Writer) flow.BuildAllOptions {
		return flow.BuildAllOptions{Root: root, Services: csv(*services), Images: *images, Platforms: csv(*platforms),
			Out: *out, Base: *base, CacheDir: *cacheDir, SBOMCacheDir: *sbomCache, StageCacheDir: *stageCache, CABundle: *caBundle, Version: *version, SourceURL: *sourceURL, Push: *push, Load: *load, Jobs: *jobs,
			VulnDB: *vulnDB, VulnSource: *vulnSource, DBCacheDir: *dbCache, DBRepository: *dbRepository, Severity: *severity, Exceptions: *exceptions, DBMaxAge: *dbMaxAge,
			Key: *key, DevKeyDir: *devKeyDir, NoSign: *noSign, Keyless: sign.KeylessOptions{FulcioURL: *fulcioURL, RekorURL: *rekorURL}, GoTags: csv(*goTags), Progress: progress}
	}
}

func runBuildAll(fs *pflag.FlagSet) action {
	options := buildAllFlags(fs)
	recordVerdict := fs.Bool("record-verdict", false, "also write the outcome to OUT/"+flow.CIResultFile+", read by ci-verdict (the exit status is unchanged): the Dagger functions return the reports also when the gate blocks")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		o := options(root, stdout)
		start := time.Now()
		_, err = flow.BuildAll(ctx, o)
		if *recordVerdict {
			if rerr := flow.RecordVerdict(o.Out, "build-all", time.Since(start), err); rerr != nil {
				return errors.Join(err, fmt.Errorf("recording the verdict: %w", rerr))
			}
		}
		return err
	}
}

func runRelease(fs *pflag.FlagSet) action {
	tag := fs.String("tag", "", "the release tag, vMAJOR.MINOR.PATCH[-PRERELEASE] (required; the images' version)")
	options := buildAllFlags(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		m, err := flow.Release(ctx, flow.ReleaseOptions{Tag: *tag, BuildAllOptions: options(root, stdout)})
		if err != nil {
			return err
		}
		for _, img := range m.Images {
			fmt.Fprintf(stdout, "release: %s\n", img.Pushed)
		}
		return nil
	}
}

func runCI(fs *pflag.FlagSet) action {
	modules := fs.String("modules", ".,services,policy", "comma-separated Go modules to gofmt-check, vet and test")
	withoutDocker := fs.Bool("without-docker", false, "skip the tests that need a Docker engine ("+strings.Join(flow.DockerTests, ", ")+"); the Dagger ci function has none")
	clusterChecks := fs.Bool("cluster-checks", false, "after build-all: deploy the build into the pull request's preview cluster (pr-N, needs --pr and a Docker engine) and run the chaos stage against it")
	cc := flow.ClusterChecks{}
	fs.IntVar(&cc.PR, "pr", 0, "the pull request number (the cluster checks' cluster is pr-N)")
	fs.BoolVar(&cc.Keep, "keep-cluster", false, "leave the cluster up after the cluster checks (default: delete it, unless it was up before)")
	fs.StringVar(&cc.StateDir, "state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	fs.StringVar(&cc.CacheDir, "cluster-cache-dir", "", "where the cluster's components built from the Go module proxy are kept (preview up's --cache-dir; default ~/.cache/darktower)")
	fs.StringVar(&cc.NodeImage, "node-image", kindcluster.NodeImageAuto, "the cluster's node image: auto, built, upstream or an image reference")
	only := fs.String("chaos-only", "", "comma-separated chaos engines to run (default: all)")
	fs.StringVar(&cc.Executor, "chaos-executor", chaos.ExecutorAuto, "darktower or litmus (default: Litmus where its CRDs are installed, else darktower)")
	fs.BoolVar(&cc.InstallLitmus, "install-litmus", false, "install the litmus-core chart (infra/platform/charts.yaml, helm CLI) before the chaos stage; where it cannot be installed the pipeline's executor judges, and says why")
	fs.DurationVar(&cc.Duration, "chaos-duration", 0, "replace every engine's TOTAL_CHAOS_DURATION (e.g. 20s; the report says so)")
	fs.DurationVar(&cc.Interval, "chaos-interval", 0, "replace every engine's CHAOS_INTERVAL (e.g. 10s)")
	options := buildAllFlags(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		o := flow.PROptions{Modules: csv(*modules), BuildAllOptions: options(root, stdout)}
		if *clusterChecks {
			if cc.PR <= 0 {
				return usageError{"ci --cluster-checks needs --pr N (the pull request; its cluster is pr-N)"}
			}
			if *only != "" {
				cc.Only = csv(*only)
			}
			if _, err := chaos.StageEngines(root, cc.Only); err != nil {
				if unknown := new(chaos.UnknownEngineError); errors.As(err, unknown) {
					return usageError{"--chaos-only: " + strings.TrimPrefix(unknown.Error(), "--only: ")}
				}
				return err
			}
			o.Cluster = &cc
		}
		if *withoutDocker {
			o.SkipTests = flow.DockerTests
		}
		_, err = flow.PR(ctx, o)
		return err
	}
}

func runCIVerdict(fs *pflag.FlagSet) action {
	out := fs.String("out", "dist", "the directory the ci check wrote")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		r, err := flow.ReadCIResult(*out)
		if err != nil {
			return err
		}
		for _, c := range r.Checks {
			if c.Skipped {
				fmt.Fprintf(stdout, "ci: %-20s skipped: %s\n", c.Name, c.Error)
			} else if c.Passed {
				fmt.Fprintf(stdout, "ci: %-20s passed (%.1f s)\n", c.Name, c.Seconds)
			} else {
				fmt.Fprintf(stdout, "ci: %-20s FAILED (%.1f s)\n%s\n", c.Name, c.Seconds, c.Error)
			}
		}
		return r.Err()
	}
}

func runExportImage(fs *pflag.FlagSet) action {
	out := fs.String("out", "dist", "the build's output directory (build-all --out)")
	service := fs.String("service", "", "the service whose image to export (required)")
	platform := fs.String("platform", "", "export only this platform's image, e.g. linux/amd64 (default: the multi-platform index)")
	file := fs.String("file", "", "the tarball to write (required)")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if *service == "" || *file == "" {
			return usageError{"export-image needs --service NAME and --file PATH.tar"}
		}
		tmp := *file + ".tmp"
		f, err := os.Create(tmp)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		err = build.ExportTar(build.ExportOptions{Out: *out, Service: *service, Platform: *platform}, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, *file)
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
		fmt.Fprintf(stdout, "export-image: %s written (an OCI layout tarball)\n", *file)
		return nil
	}
}

func runVerify(fs *pflag.FlagSet) action {
	image := fs.String("image", "", "the image to verify, as a registry reference (tag or digest)")
	key := fs.String("key", "", "the signer's public key (PEM file)")
	identity := fs.String("certificate-identity", "", "keyless: the signing workflow, e.g. https://github.com/ORG/REPO/.github/workflows/release.yml@refs/tags/v1.2.3")
	issuer := fs.String("certificate-oidc-issuer", "https://token.actions.githubusercontent.com", "keyless: the OIDC issuer of that identity")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if *image == "" || (*key == "") == (*identity == "") {
			return usageError{"verify needs --image REF and either --key cosign.pub or --certificate-identity WORKFLOW (keyless)"}
		}
		o := sign.VerifyOptions{Image: *image, Keychain: registry.Keychain(os.Getenv, *image)}
		against := *key
		if *key != "" {
			pub, err := os.ReadFile(*key)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			o.PublicKey = pub
		} else {
			o.Keyless = &sign.KeylessIdentity{Identity: *identity, Issuer: *issuer}
			against = *identity + " (" + *issuer + ")"
		}
		v, err := sign.Verify(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "verify: %s (%s): %d signature(s) and attestations %v verified against %s\n", *image, v.Digest, v.Signatures, v.Attestations, against)
		return nil
	}
}

func runPromote(fs *pflag.FlagSet) action {
	tag := fs.String("tag", "", "the release tag to promote, vMAJOR.MINOR.PATCH[-PRERELEASE] (required)")
	from := fs.String("from", "", "the release registry/repository prefix the tag was pushed to, e.g. ghcr.io/darktower (required; credentials: "+registry.EnvSourceUsername+"/"+registry.EnvSourcePassword+" or the Docker config)")
	to := fs.String("to", "", "the production registry/repository prefix, e.g. registry.example.com/darktower (required; credentials: "+registry.EnvUsername+"/"+registry.EnvPassword+" or the Docker config)")
	key := fs.String("key", "", "the signer's public key (PEM file)")
	identity := fs.String("certificate-identity", "", "keyless: the signing workflow, e.g. https://github.com/ORG/REPO/.github/workflows/release.yml@refs/tags/v1.2.3")
	issuer := fs.String("certificate-oidc-issuer", "https://token.actions.githubusercontent.com", "keyless: the OIDC issuer of that identity")
	sourceURL := fs.String("source-url", "", "the repository the provenance must name (default: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, else the origin remote as https)")
	services := fs.String("services", "", "comma-separated services to promote (default: all in images/)")
	kustomizations := fs.StringSlice("kustomization", []string{"infra/overlays/prod/kustomization.yaml", "infra/platform/feature-flags/kustomization.yaml"},
		`the kustomizations whose image pins are rewritten to the promoted digests (repeat or comma-separate; each promoted image must be pinned by one of them; "none": no pins)`)
	out := fs.String("out", "dist/promote", "where the pins' patch ("+promote.PatchFile+") and the verification summary ("+promote.SummaryFile+") are written")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if *tag == "" || *from == "" || *to == "" || (*key == "") == (*identity == "") {
			return usageError{"promote needs --tag vX.Y.Z, --from REGISTRY/PREFIX, --to REGISTRY/PREFIX and either --key cosign.pub or --certificate-identity WORKFLOW (keyless)"}
		}
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		// As release does with --push: GitHub keeps capitals in an owner's name, a registry refuses them.
		*from, *to = registry.LowercasePrefix(*from), registry.LowercasePrefix(*to)
		o := promote.Options{Tag: *tag, From: *from, To: *to, Out: *out, Progress: stdout, Keychain: registry.PromotionKeychain(os.Getenv, *from, *to)}
		if *key != "" {
			if o.Policy.PublicKey, err = os.ReadFile(*key); err != nil {
				return fmt.Errorf("--key: %w (the signer's public key, PEM)", err)
			}
		} else {
			o.Policy.Keyless = &sign.KeylessIdentity{Identity: *identity, Issuer: *issuer}
		}
		if o.Policy.Repository = *sourceURL; o.Policy.Repository == "" {
			src, err := source.Read(root, os.Getenv)
			if err == nil && src.URL == "" {
				err = errors.New("no origin remote, and not in GitHub Actions")
			}
			if err != nil {
				return usageError{fmt.Sprintf("--source-url is needed (the repository the provenance must name, e.g. https://github.com/darktower/delivery): it cannot be read from the checkout: %v", err)}
			}
			o.Policy.Repository = src.URL
		}
		cat, err := catalog.Load(filepath.Join(root, "images"))
		if err != nil {
			return err
		}
		specs, err := cat.Select(csv(*services))
		if err != nil {
			return fmt.Errorf("--services: %w", err)
		}
		for _, s := range specs {
			o.Services = append(o.Services, s.Name)
		}
		if !slices.Equal(*kustomizations, []string{"none"}) {
			for _, k := range *kustomizations {
				rel, err := filepath.Rel(root, filepath.Join(root, k))
				if err != nil || strings.HasPrefix(rel, "..") || filepath.IsAbs(k) {
					return usageError{fmt.Sprintf("--kustomization %q: give a path inside the repository (the patch names it)", k)}
				}
				o.Kustomizations = append(o.Kustomizations, promote.Kustomization{Path: k, PatchPath: filepath.ToSlash(rel)})
			}
		}
		_, err = promote.Promote(ctx, o)
		return err
	}
}

func runGoVulnDB(fs *pflag.FlagSet) action {
	out := fs.String("out", "", "directory to write the Trivy DB to (trivy.db, metadata.json under db/): use it as build-all --vuln-db DIR")
	version := fs.String("version", scan.GoVulnDBVersion, "the "+scan.GoVulnDBModule+" module version (fetched through the Go module proxy, GOPROXY)")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if *out == "" {
			return usageError{"go-vuln-db needs --out DIR"}
		}
		info, err := scan.BuildGoVulnDB(ctx, *out, *version)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "go-vuln-db: %s@%s (%s) as a Trivy DB in %s: Go standard library and golang.org/x/ advisories only (no severities: findings are UNKNOWN; OS packages are not covered)\n",
			info.Module, info.Version, info.Time.Format(time.RFC3339), info.Dir)
		return nil
	}
}

func runUpdateBase(*pflag.FlagSet) action {
	return func(ctx context.Context, stdout, _ io.Writer) error {
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		_, err = flow.UpdateBase(ctx, root, nil, stdout)
		return err
	}
}

func runDevSecrets(fs *pflag.FlagSet) action {
	ns := fs.String("namespace", "dark-tower-local-secrets", "namespace of the Secrets (the local ClusterSecretStore reads it)")
	serviceNS := fs.String("service-namespaces", "region-us-west,region-us-east", "comma-separated namespaces running the services")
	dataNS := fs.String("data-namespace", "dark-tower-data", "PostgreSQL's and Redis's namespace")
	format := fs.String("format", "kubernetes", `"kubernetes" (Secrets, for kubectl apply -f -) or "env" (infra/local/.env for docker compose)`)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if *format != "kubernetes" && *format != "env" {
			return usageError{fmt.Sprintf("--format %q: use kubernetes or env", *format)}
		}
		secrets, err := devsecrets.Generate(devsecrets.Options{Namespace: *ns, ServiceNamespaces: csv(*serviceNS), DataNamespace: *dataNS})
		if err != nil {
			return err
		}
		var manifest []byte
		if *format == "env" {
			env, err := devsecrets.EnvFile(secrets)
			if err != nil {
				return err
			}
			manifest = []byte(env)
		} else if manifest, err = devsecrets.Manifest(secrets); err != nil {
			return err
		}
		// Only the manifest goes to stdout (it is meant for kubectl); never log it.
		fmt.Fprintf(stderr, "dev-secrets: %d secrets for namespace %s (local development only)\n", len(secrets), *ns)
		_, err = stdout.Write(manifest)
		return err
	}
}

func runPlatformCharts(fs *pflag.FlagSet) action {
	file := fs.String("file", "infra/platform/charts.yaml", "the charts file")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		charts, err := platform.LoadCharts(*file)
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, platform.TSV(charts))
		return err
	}
}

func runPinImages(fs *pflag.FlagSet) action {
	manifest := fs.String("manifest", "dist/manifest.json", "the build whose digests to pin")
	kustomizations := fs.StringSlice("kustomization", nil, "a kustomization.yaml whose images: entries to pin (required; repeat it, or comma-separate, for the overlay and e.g. infra/platform/feature-flags: each of the build's images must be pinned by one of them)")
	services := fs.String("services", "", "comma-separated images of the build to pin (default: all of them)")
	registryPrefix := fs.String("registry", "", "where the images were pushed, e.g. localhost:5001/darktower (required)")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if len(*kustomizations) == 0 || *registryPrefix == "" {
			return usageError{"pin-images needs --kustomization and --registry"}
		}
		m, err := build.ReadManifest(*manifest)
		if err != nil {
			return err
		}
		digests := map[string]string{}
		for _, img := range m.Images {
			digests[img.Service] = img.Digest
		}
		if *services != "" {
			chosen := map[string]string{}
			for _, svc := range csv(*services) {
				d, ok := digests[svc]
				if !ok {
					return usageError{fmt.Sprintf("--services: %s is not in %s (it has %s)", svc, *manifest, strings.Join(slices.Sorted(maps.Keys(digests)), ", "))}
				}
				chosen[svc] = d
			}
			digests = chosen
		}
		edits, err := overlay.PinImages(*kustomizations, overlay.Pins(*registryPrefix, digests))
		if err != nil {
			return err
		}
		for _, e := range edits {
			fmt.Fprintf(stdout, "pin-images: %d image(s) in %s pinned to build %s (%s)\n", len(e.Services), e.Path, m.Version, strings.Join(e.Services, ", "))
		}
		return nil
	}
}

// simFlags declares the flags every sim subcommand takes.
func simFlags(fs *pflag.FlagSet) (dir, cache *string) {
	dir = fs.String("state-dir", sim.DefaultStateDir(), "where the cluster keeps its state, certificates and logs")
	cache = fs.String("cache-dir", sim.DefaultCacheDir(), "where the built control plane and kwok are kept")
	return dir, cache
}

func runSimUp(fs *pflag.FlagSet) action {
	dir, cache := simFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		tools, err := sim.EnsureTools(ctx, *cache, stdout)
		if err != nil {
			return err
		}
		s, err := sim.Up(ctx, *dir, tools, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "export KUBECONFIG=%s\n", s.Kubeconfig)
		return nil
	}
}

func runSimDown(fs *pflag.FlagSet) action {
	dir, _ := simFlags(fs)
	return func(_ context.Context, stdout, _ io.Writer) error { return sim.Down(*dir, stdout) }
}

func runSimStatus(fs *pflag.FlagSet) action {
	dir, _ := simFlags(fs)
	return func(ctx context.Context, stdout, _ io.Writer) error {
		s, err := sim.ReadState(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "server %s (Kubernetes %s), up since %s\n", s.Server, s.Kubernetes, s.Started.Format(time.RFC3339))
		for _, p := range s.Processes {
			fmt.Fprintf(stdout, "  %-24s pid %d\n", p.Name, p.PID)
		}
		if err := s.Check(ctx); err != nil {
			return fmt.Errorf("unhealthy: %w", err)
		}
		fmt.Fprintln(stdout, "healthy")
		return nil
	}
}

func runSimKubeconfig(fs *pflag.FlagSet) action {
	dir, _ := simFlags(fs)
	return func(_ context.Context, stdout, _ io.Writer) error {
		s, err := sim.ReadState(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, s.Kubeconfig)
		return nil
	}
}

func runValidate(fs *pflag.FlagSet) action {
	server := fs.Bool("server", false, "validate against a Kubernetes API server (required; client-side checks are `make test`'s policy tests)")
	overlays := fs.String("overlays", strings.Join(validate.Overlays, ","), "comma-separated overlays under infra/")
	platform := fs.String("platform", strings.Join(validate.PlatformComponents, ","), "comma-separated platform components under infra/ to dry-run apply (\"none\" to skip)")
	kubeconfig := fs.String("kubeconfig", "", "validate against this cluster instead of the simulated one (sim up)")
	dir := fs.String("state-dir", sim.DefaultStateDir(), "the simulated cluster's state directory")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if !*server {
			return usageError{"validate needs --server (the client-side checks run with `make test`)"}
		}
		cacheDir := sim.DefaultCacheDir()
		var cfg *rest.Config
		var err error
		if *kubeconfig != "" {
			cfg, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
		} else {
			var tools *sim.Tools
			if tools, err = sim.EnsureTools(ctx, cacheDir, stdout); err != nil {
				return err
			}
			var s *sim.State
			if s, err = sim.Up(ctx, *dir, tools, stdout); err != nil {
				return err
			}
			cfg, err = s.RESTConfig()
		}
		if err != nil {
			return err
		}
		client, err := cluster.New(cfg)
		if err != nil {
			return err
		}
		crds, err := sim.LoadCRDs(ctx, cacheDir, sim.PlatformCRDs)
		if err != nil {
			return err
		}
		components := csv(*platform)
		if *platform == "none" {
			components = []string{}
		}
		rep, err := validate.Server(ctx, validate.Options{Infra: "infra", Overlays: csv(*overlays), Platform: components, Client: client, CRDs: crds, Progress: stdout})
		if err != nil {
			return err
		}
		for _, f := range rep.Findings {
			fmt.Fprintf(stdout, "REFUSED %s\n", f)
		}
		for _, n := range rep.NotReady {
			fmt.Fprintf(stdout, "NOT READY %s\n", n)
		}
		for _, kind := range slices.Sorted(maps.Keys(rep.Unchecked)) {
			fmt.Fprintf(stdout, "NOT CHECKED SERVER-SIDE %s: %d object(s); its CRD is not available here (policy tests check it offline)\n", kind, rep.Unchecked[kind])
		}
		if !rep.OK() {
			return fmt.Errorf("%d object(s) refused, %d overlay(s) not ready", len(rep.Findings), len(rep.NotReady))
		}
		fmt.Fprintf(stdout, "validate: %d objects accepted by the server; every workload Ready and replaced a deleted pod\n", rep.Applied)
		return nil
	}
}

func runVersion(*pflag.FlagSet) action {
	return func(_ context.Context, stdout, _ io.Writer) error {
		info, ok := debug.ReadBuildInfo()
		if !ok {
			return fmt.Errorf("no build information in this binary")
		}
		rev, dirty := "unknown", ""
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " (modified)"
				}
			}
		}
		fmt.Fprintf(stdout, "darktower delivery %s, revision %s%s, %s\n", info.Main.Version, rev, dirty, info.GoVersion)
		return nil
	}
}

// exitBlocked is the vulnerability gate's refusal, distinct from other
// failures so CI can tell "vulnerable" from "broken".
const exitBlocked = scan.ExitBlocked

// run dispatches and returns the process exit code: 0 success, 1 failure,
// 2 bad usage, 3 blocked by the vulnerability gate. The command tree is
// built per call, so each call (the tests make many) parses fresh flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // cobra reads os.Args when given nil
	}
	root := newRoot(stdout, stderr)
	root.SetArgs(singleDashCompat(root, args))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if msg := strings.TrimSpace(err.Error()); msg != "" {
		// Name the command, unless the message already starts with it.
		if cmd != nil && cmd != root {
			if path := strings.TrimPrefix(cmd.CommandPath(), root.Name()+" "); !strings.HasPrefix(msg, path+" ") && !strings.HasPrefix(msg, path+":") {
				msg = path + ": " + msg
			}
		}
		fmt.Fprintln(stderr, msg)
	}
	if _, bad := err.(usageError); bad {
		return 2
	}
	if blocked := (*scan.BlockedError)(nil); errors.As(err, &blocked) {
		return exitBlocked
	}
	return 1
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
