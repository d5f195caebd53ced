// Dark Tower's delivery pipeline as Dagger functions.
//
// Every function runs the repository's own CLI (the same `go run .
// <command>` a laptop runs without Dagger) in a pinned Go container, with
// cache volumes for Go's module and build caches, the Trivy DB, the
// fetched base images and the SBOMs. Secrets arrive as Dagger secrets and
// reach the CLI only as secret environment variables. No pipeline logic
// lives here: the command lines are made by the cli package, whose tests
// check them against the real CLI.
package main

import (
	"context"

	"dagger/darktower/cli"
	"dagger/darktower/internal/dagger"
)

// Darktower is the delivery pipeline of one checkout of the repository.
type Darktower struct {
	// The repository.
	Source *dagger.Directory
	// The Go image the CLI is built and run in.
	GoImage string
}

// New loads the pipeline for a checkout of the repository.
func New(
	// The repository (default: the one this module lives in). Its .git is
	// kept: the version, revision and SOURCE_DATE_EPOCH come from it.
	// Everything the .gitignore files exclude is left out (ci/modcheck
	// tests that): git-ignored secrets such as infra/local/.env and build
	// outputs never reach the engine.
	// +defaultPath="/"
	// +ignore=["dist", "bin", "**/*.test", "**/*.out", ".cache", "ci/internal/dagger", "ci/dagger.gen.go", "infra/local/.env", ".scratch", "ci/internal/querybuilder", "ci/internal/telemetry", ".git/hooks", ".git/logs"]
	source *dagger.Directory,
	// The Go toolchain image (the project builds with Go 1.27.3); `go run .
	// update-base` pins the default below to its tag's current digest.
	// +optional
	// +default="golang:1.27.3-trixie"
	goImage string,
) *Darktower {
	return &Darktower{Source: source, GoImage: goImage}
}

// goContainer is the pinned Go image with the cache volumes.
func (m *Darktower) goContainer() *dagger.Container {
	return dag.Container().From(m.GoImage).
		WithEnvVariable("GOTOOLCHAIN", "go1.27.3").
		WithMountedCache("/go/pkg/mod", dag.CacheVolume("darktower-go-mod")).
		WithMountedCache("/root/.cache/go-build", dag.CacheVolume("darktower-go-build")).
		WithMountedCache(cli.DBCache, dag.CacheVolume("darktower-trivy-db")).
		WithMountedCache(cli.BaseCache, dag.CacheVolume("darktower-base-images")).
		WithMountedCache(cli.SBOMCache, dag.CacheVolume("darktower-sbom")).
		WithMountedCache(cli.StageCache, dag.CacheVolume("darktower-stages"))
}

// withCLI mounts the source and builds the CLI from it.
func (m *Darktower) withCLI(c *dagger.Container) *dagger.Container {
	return c.WithMountedDirectory(cli.SourceDir, m.Source).
		WithWorkdir(cli.SourceDir).
		WithExec([]string{"go", "build", "-o", cli.Binary, "."})
}

// toolchain is the Go container with the CLI built from the source.
func (m *Darktower) toolchain() *dagger.Container { return m.withCLI(m.goContainer()) }

// signing gives the container what the CLI signs with: a cosign key and
// its password, or in GitHub Actions the job's OIDC request endpoint and
// token for keyless signing. Nothing given: the CLI's development key.
type signing struct {
	key, password, oidcURL, oidcToken *dagger.Secret
	workflowRef, serverURL            string
}

func (s signing) apply(c *dagger.Container, b *cli.BuildAll) *dagger.Container {
	if s.key != nil {
		b.SignKey = true
		c = c.WithSecretVariable(cli.EnvSigningKey, s.key)
	}
	if s.password != nil {
		c = c.WithSecretVariable(cli.EnvKeyPassword, s.password)
	}
	if s.oidcURL != nil && s.oidcToken != nil {
		c = c.WithSecretVariable(cli.EnvOIDCRequestURL, s.oidcURL).WithSecretVariable(cli.EnvOIDCRequestToken, s.oidcToken)
	}
	if s.workflowRef != "" {
		server := s.serverURL
		if server == "" {
			server = "https://github.com"
		}
		c = c.WithEnvVariable(cli.EnvWorkflowRef, s.workflowRef).WithEnvVariable(cli.EnvServerURL, server)
	}
	return c
}

// withRegistry gives the CLI and Dagger's own pulls and pushes the
// registry's credentials.
func withRegistry(c *dagger.Container, registry, username string, password *dagger.Secret) *dagger.Container {
	if username == "" || password == nil {
		return c
	}
	return c.WithRegistryAuth(cli.RegistryHost(registry), username, password).
		WithEnvVariable(cli.EnvRegistryUsername, username).
		WithSecretVariable(cli.EnvRegistryPassword, password)
}

// perCall gives the next step a value that differs on every call, so the
// engine executes it again. A function marked +cache="never" is called
// again, but the container steps it builds are still served from the
// layer cache when their inputs are unchanged: only this value makes the
// CLI ask the registries, the vulnerability DB, Fulcio or the clock again.
func perCall(c *dagger.Container) *dagger.Container {
	return c.WithEnvVariable(cli.EnvCallID, cli.CallID())
}

// withVulnDB mounts a prepared Trivy DB (the air-gapped form).
func withVulnDB(c *dagger.Container, db *dagger.Directory, b *cli.BuildAll) *dagger.Container {
	if db == nil {
		return c
	}
	b.VulnDB = true
	return c.WithMountedDirectory(cli.VulnDBDir, db)
}

// BuildAll builds every service's image (each platform), writes their
// SPDX and CycloneDX SBOMs, scans them (blocking on CRITICAL findings),
// signs and attests them, and returns the output directory: the OCI
// layout, manifest.json, summary.md, sbom/, scan/ (Trivy JSON, SARIF) and
// ci.json. When the gate blocks it still returns the directory (no
// manifest.json, nothing signed): read the verdict with ci-verdict, e.g.
// dagger call build-all export --path dist && dagger call ci-verdict --dist dist
//
// +cache="never"
func (m *Darktower) BuildAll(
	ctx context.Context,
	// Services to build (default: all in images/).
	// +optional
	services []string,
	// Platforms, e.g. linux/amd64 (default: each spec's own).
	// +optional
	platforms []string,
	// Base image: "auto" (the CLI's default: locked, or the built-in skeleton,
	// announced, when the locked base is neither cached nor fetchable and
	// nothing is published), "locked", "skeleton", or an image reference.
	// +optional
	// +default="auto"
	base string,
	// Version to stamp (default: from git describe).
	// +optional
	version string,
	// Lowest severity that blocks the build (default: infra/ci/image-scan.yaml's, CRITICAL).
	// +optional
	severity string,
	// A prepared Trivy DB directory (default: download and cache Trivy's).
	// +optional
	vulnDb *dagger.Directory,
	// Cosign private key (PEM) to sign with (default: keyless in GitHub Actions, else a throwaway development key).
	// +optional
	key *dagger.Secret,
	// The key's password.
	// +optional
	keyPassword *dagger.Secret,
	// Do not sign or attest.
	// +optional
	noSign bool,
	// The image specs to build (default: images, the services;
	// images/platform: Flagger and Traefik, from their tool modules).
	// +optional
	images string,
) (*dagger.Directory, error) {
	b := cli.BuildAll{Services: services, Images: images, Platforms: platforms, Base: base, Version: version, Severity: severity, NoSign: noSign}
	return m.reports(ctx, b, vulnDb, signing{key: key, password: keyPassword}, true)
}

// reports runs build-all keeping its output directory when the gate
// blocks (the SBOMs, scan reports and summary say why; ci.json records
// the verdict for ci-verdict); any other failure is the function's error.
func (m *Darktower) reports(ctx context.Context, b cli.BuildAll, vulnDb *dagger.Directory, s signing, fresh bool) (*dagger.Directory, error) {
	b.RecordVerdict = true
	c := withVulnDB(m.toolchain(), vulnDb, &b)
	c = s.apply(c, &b)
	if fresh {
		c = perCall(c)
	}
	out := c.WithExec(cli.BuildAllCmd(b), dagger.ContainerWithExecOpts{Expect: dagger.ReturnTypeAny}).Directory(cli.OutDir)
	verdict, err := out.File(cli.VerdictFile).Contents(ctx)
	if err != nil {
		return nil, err
	}
	if err := cli.BrokenBuild([]byte(verdict)); err != nil {
		return nil, err
	}
	return out, nil
}

// buildAll runs build-all and returns its output directory; fresh runs it
// again on every call (see perCall).
func (m *Darktower) buildAll(b cli.BuildAll, vulnDb *dagger.Directory, s signing, fresh bool) *dagger.Directory {
	c := withVulnDB(m.toolchain(), vulnDb, &b)
	c = s.apply(c, &b)
	if fresh {
		c = perCall(c)
	}
	return c.WithExec(cli.BuildAllCmd(b)).Directory(cli.OutDir)
}

// Build builds one service for one platform (scanned, not signed) and
// returns it as a container, e.g. to publish:
// dagger call build --service ac-service publish --address ttl.sh/ac-service:1h
//
// +cache="never"
func (m *Darktower) Build(
	// The service (a file in images/).
	service string,
	// The platform.
	// +optional
	// +default="linux/amd64"
	platform string,
	// Base image: "auto" (the CLI's default: locked, or the built-in skeleton,
	// announced, when the locked base is neither cached nor fetchable and
	// nothing is published), "locked", "skeleton", or an image reference.
	// +optional
	// +default="auto"
	base string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
	// Registry the returned container will be published to (for its credentials).
	// +optional
	registry string,
	// Registry user name.
	// +optional
	registryUsername string,
	// Registry password or token.
	// +optional
	registryPassword *dagger.Secret,
) *dagger.Container {
	b := cli.BuildAll{Services: []string{service}, Platforms: []string{platform}, Base: base, NoSign: true}
	c := withVulnDB(m.toolchain(), vulnDb, &b)
	image := perCall(c).WithExec(cli.BuildAllCmd(b)).
		WithExec(cli.ExportImageCmd(service, platform)).
		File(cli.ImageTar)
	out := dag.Container(dagger.ContainerOpts{Platform: dagger.Platform(platform)}).Import(image)
	if registry != "" && registryUsername != "" && registryPassword != nil {
		out = out.WithRegistryAuth(cli.RegistryHost(registry), registryUsername, registryPassword)
	}
	return out
}

// Sbom returns the SPDX 2.3 and CycloneDX 1.6 SBOMs of every image
// (build-all's sbom/); a vulnerability does not fail it, a broken build does.
func (m *Darktower) Sbom(
	ctx context.Context,
	// Services (default: all).
	// +optional
	services []string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) (*dagger.Directory, error) {
	// locked, not auto: this function is cached as a function of the
	// source, so it must not keep a skeleton fallback's SBOMs.
	b := cli.BuildAll{Services: services, Base: "locked", NoSign: true}
	out, err := m.reports(ctx, b, vulnDb, signing{}, false)
	if err != nil {
		return nil, err
	}
	return out.Directory("sbom"), nil
}

// Scan returns the vulnerability reports (build-all's scan/: Trivy JSON,
// SARIF) and ci.json, also when a finding at or above severity without an
// accepted exception in .trivyignore.yaml blocks: then ci-verdict on the
// returned directory fails, naming it.
//
// +cache="never"
func (m *Darktower) Scan(
	ctx context.Context,
	// Services (default: all).
	// +optional
	services []string,
	// Lowest severity that blocks (default: infra/ci/image-scan.yaml's, CRITICAL).
	// +optional
	severity string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) (*dagger.Directory, error) {
	// locked, not auto: the verdict is on the images that ship.
	b := cli.BuildAll{Services: services, Base: "locked", Severity: severity, NoSign: true}
	out, err := m.reports(ctx, b, vulnDb, signing{}, true)
	if err != nil {
		return nil, err
	}
	return out.Directory("scan").WithFile(cli.VerdictFile, out.File(cli.VerdictFile)), nil
}

// Sign builds, scans, signs and attests every image with the given key
// (SBOM, vulnerability and SLSA provenance attestations) and returns the
// output directory, signatures included in its OCI layout.
//
// +cache="never"
func (m *Darktower) Sign(
	// Cosign private key (PEM).
	key *dagger.Secret,
	// The key's password.
	// +optional
	keyPassword *dagger.Secret,
	// Services (default: all).
	// +optional
	services []string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) *dagger.Directory {
	// locked, not auto: never sign images on the fallback skeleton.
	b := cli.BuildAll{Services: services, Base: "locked"}
	return m.buildAll(b, vulnDb, signing{key: key, password: keyPassword}, true)
}

// Publish builds, scans and signs every image and pushes images,
// signatures and attestations under a registry prefix; returns the output
// directory (manifest.json names each pushed reference). It signs with
// --key, or in GitHub Actions keyless like release (pass the OIDC
// arguments); it refuses the development key before building.
//
// +cache="never"
func (m *Darktower) Publish(
	// Registry and repository prefix, e.g. ghcr.io/darktower.
	registry string,
	// Registry user name.
	// +optional
	registryUsername string,
	// Registry password or token.
	// +optional
	registryPassword *dagger.Secret,
	// Cosign private key (PEM); without it, keyless signing needs the OIDC
	// arguments (the development key is refused: nobody could verify it).
	// +optional
	key *dagger.Secret,
	// The key's password.
	// +optional
	keyPassword *dagger.Secret,
	// Version to stamp (default: from git describe).
	// +optional
	version string,
	// GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_URL (keyless signing).
	// +optional
	oidcRequestUrl *dagger.Secret,
	// GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_TOKEN.
	// +optional
	oidcRequestToken *dagger.Secret,
	// GitHub Actions: $GITHUB_WORKFLOW_REF (the provenance's builder).
	// +optional
	workflowRef string,
	// GitHub Actions: $GITHUB_SERVER_URL (default https://github.com).
	// +optional
	serverUrl string,
	// The repository's URL for the images' source label and the provenance
	// (default: the origin remote of the source's .git).
	// +optional
	sourceUrl string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) *dagger.Directory {
	b := cli.BuildAll{Version: version, Push: registry, SourceURL: sourceUrl}
	c := withRegistry(m.toolchain(), registry, registryUsername, registryPassword)
	c = withVulnDB(c, vulnDb, &b)
	c = signing{key: key, password: keyPassword, oidcToken: oidcRequestToken, oidcURL: oidcRequestUrl, workflowRef: workflowRef, serverURL: serverUrl}.apply(c, &b)
	return perCall(c).WithExec(cli.BuildAllCmd(b)).Directory(cli.OutDir)
}

// Verify checks a pushed image's signature and its SBOM, vulnerability
// and provenance attestations, against a public key or (keyless) the
// workflow identity that signed it.
//
// +cache="never"
func (m *Darktower) Verify(
	ctx context.Context,
	// The image, by tag or digest.
	image string,
	// The signer's public key (PEM).
	// +optional
	key *dagger.File,
	// Keyless: the signing workflow, e.g. https://github.com/ORG/REPO/.github/workflows/release.yml@refs/tags/v1.2.3.
	// +optional
	certificateIdentity string,
	// Keyless: the identity's OIDC issuer.
	// +optional
	// +default="https://token.actions.githubusercontent.com"
	certificateOidcIssuer string,
	// Registry user name.
	// +optional
	registryUsername string,
	// Registry password or token.
	// +optional
	registryPassword *dagger.Secret,
) (string, error) {
	c := withRegistry(m.toolchain(), image, registryUsername, registryPassword)
	if key != nil {
		c = c.WithMountedFile(cli.KeyFile, key)
	}
	return perCall(c).WithExec(cli.VerifyCmd(image, key != nil, certificateIdentity, certificateOidcIssuer)).Stdout(ctx)
}

// Ci is the pull-request check: gofmt, go vet and go test of every module
// (the Docker tests excepted: there is no engine in here), then build-all
// with the vulnerability gate. It returns the output directory whatever
// the outcome, so the job can publish summary.md and the SARIF; then
// ci-verdict fails the job if a check failed.
//
// +cache="never"
func (m *Darktower) Ci(
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
	// With the cluster checks: the Docker engine's socket (kind creates
	// cluster pr-N there), e.g. --docker-socket=/var/run/docker.sock.
	// +optional
	dockerSocket *dagger.Socket,
	// The pull request number (the cluster checks' cluster is pr-N).
	// +optional
	pr int,
	// The chaos stage's TOTAL_CHAOS_DURATION override, e.g. 20s (default: the engines').
	// +optional
	chaosDuration string,
	// Install Litmus (the litmus-core chart) before the chaos stage; where
	// it cannot be installed the pipeline's executor judges, and says why.
	// +optional
	installLitmus bool,
) *dagger.Directory {
	b := cli.BuildAll{NoSign: true}
	// The tests start PostgreSQL, Redis and a registry from Debian's
	// packages; the repository's installer knows which. It runs before the
	// source is mounted, so Dagger reuses the layer until the script changes.
	installer := "/usr/local/bin/install-test-deps"
	c := m.goContainer().
		WithMountedFile(installer, m.Source.File("scripts/install-test-deps.sh")).
		WithEnvVariable("DARKTOWER_TEST_DEPS", "no-docker").
		WithExec([]string{"bash", installer})
	if dockerSocket != nil {
		c = withDocker(c, dockerSocket).WithMountedCache(cli.PreviewCache, dag.CacheVolume("darktower-preview"))
	}
	c = m.withCLI(c)
	c = withVulnDB(c, vulnDb, &b)
	cmd := cli.CICmd(b)
	if dockerSocket != nil {
		cmd = cli.CIClusterChecksCmd(b, cli.ClusterChecks{PR: pr, ChaosDuration: chaosDuration, InstallLitmus: installLitmus})
	}
	return perCall(c).WithExec(cmd, dagger.ContainerWithExecOpts{Expect: dagger.ReturnTypeAny}).Directory(cli.OutDir)
}

// Chaos runs the repository's chaos engines against pull request pr's
// preview (cluster pr-N on the Docker engine behind dockerSocket, made by
// preview-up) and returns the CLI's output: the experiment table, with
// the executor that judged (Litmus where it is installed, or installLitmus
// installs it; the pipeline's own elsewhere). Fails when an experiment
// fails. Same as `go run . chaos run --cluster pr-N`.
//
// +cache="never"
func (m *Darktower) Chaos(
	ctx context.Context,
	// The Docker engine's socket (the preview's nodes are there).
	dockerSocket *dagger.Socket,
	// The pull request number.
	pr int,
	// Comma-separated engines to run (default: all).
	// +optional
	only string,
	// Replace every engine's TOTAL_CHAOS_DURATION, e.g. 20s.
	// +optional
	duration string,
	// Install Litmus (the litmus-core chart) first.
	// +optional
	installLitmus bool,
) (string, error) {
	return perCall(m.previewContainer(dockerSocket)).WithExec(cli.ChaosRunCmd(pr, only, duration, installLitmus)).Stdout(ctx)
}

// CiVerdict prints a ci run's checks and fails if any failed.
func (m *Darktower) CiVerdict(
	ctx context.Context,
	// The directory ci returned.
	dist *dagger.Directory,
) (string, error) {
	return m.toolchain().WithMountedDirectory(cli.OutDir, dist).WithExec(cli.CIVerdictCmd(cli.OutDir)).Stdout(ctx)
}

// Release builds, scans, signs (never with a development key) and pushes
// the images of a release tag, stamped with it; returns the output
// directory. In GitHub Actions it signs keyless with the job's identity.
//
// +cache="never"
func (m *Darktower) Release(
	// The release tag, vMAJOR.MINOR.PATCH[-PRERELEASE].
	tag string,
	// Registry and repository prefix, e.g. ghcr.io/darktower.
	registry string,
	// Registry user name.
	// +optional
	registryUsername string,
	// Registry password or token.
	// +optional
	registryPassword *dagger.Secret,
	// Cosign private key (PEM); without it, keyless signing needs the OIDC arguments.
	// +optional
	key *dagger.Secret,
	// The key's password.
	// +optional
	keyPassword *dagger.Secret,
	// GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_URL (keyless signing; a
	// secret because the runner gives it only as an environment variable).
	// +optional
	oidcRequestUrl *dagger.Secret,
	// GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_TOKEN.
	// +optional
	oidcRequestToken *dagger.Secret,
	// GitHub Actions: $GITHUB_WORKFLOW_REF (the provenance's builder).
	// +optional
	workflowRef string,
	// GitHub Actions: $GITHUB_SERVER_URL (default https://github.com).
	// +optional
	serverUrl string,
	// The repository's URL for the images' source label and the provenance
	// (default: the origin remote of the source's .git).
	// +optional
	sourceUrl string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) *dagger.Directory {
	b := cli.BuildAll{Push: registry, SourceURL: sourceUrl}
	c := withRegistry(m.toolchain(), registry, registryUsername, registryPassword)
	c = withVulnDB(c, vulnDb, &b)
	c = signing{key: key, password: keyPassword, oidcToken: oidcRequestToken, oidcURL: oidcRequestUrl, workflowRef: workflowRef, serverURL: serverUrl}.apply(c, &b)
	return perCall(c).WithExec(cli.ReleaseCmd(tag, b)).Directory(cli.OutDir)
}

// Promote verifies the images of a release tag in the release registry
// (each one's signature and its SBOM, vulnerability and provenance
// attestations, against a public key or the signing workflow's identity;
// the gate passed; the provenance names the repository and the tag),
// then copies them by digest with their signatures and attestations to
// the production registry and tags them. Returns summary.md (what was
// verified) and prod-pins.patch (infra/overlays/prod and
// infra/platform/feature-flags pinned to the
// promoted digests). Same as `go run . promote`.
//
// +cache="never"
func (m *Darktower) Promote(
	// The release tag, vMAJOR.MINOR.PATCH[-PRERELEASE].
	tag string,
	// The release registry and repository prefix, e.g. ghcr.io/darktower.
	from string,
	// The production registry and repository prefix.
	to string,
	// The signer's public key (PEM).
	// +optional
	key *dagger.File,
	// Keyless: the signing workflow, e.g. https://github.com/ORG/REPO/.github/workflows/release.yml@refs/tags/v1.2.3.
	// +optional
	certificateIdentity string,
	// Keyless: the identity's OIDC issuer.
	// +optional
	// +default="https://token.actions.githubusercontent.com"
	certificateOidcIssuer string,
	// The repository the provenance must name (default: the origin remote of the source's .git).
	// +optional
	sourceUrl string,
	// Production registry user name.
	// +optional
	registryUsername string,
	// Production registry password or token.
	// +optional
	registryPassword *dagger.Secret,
	// Release registry user name.
	// +optional
	sourceRegistryUsername string,
	// Release registry password or token.
	// +optional
	sourceRegistryPassword *dagger.Secret,
) *dagger.Directory {
	c := withRegistry(m.toolchain(), to, registryUsername, registryPassword)
	if sourceRegistryUsername != "" && sourceRegistryPassword != nil {
		c = c.WithEnvVariable(cli.EnvSourceRegistryUsername, sourceRegistryUsername).
			WithSecretVariable(cli.EnvSourceRegistryPassword, sourceRegistryPassword)
	}
	if key != nil {
		c = c.WithMountedFile(cli.KeyFile, key)
	}
	p := cli.Promote{Tag: tag, From: from, To: to, KeyFile: key != nil, Identity: certificateIdentity, Issuer: certificateOidcIssuer, SourceURL: sourceUrl}
	return perCall(c).WithExec(cli.PromoteCmd(p)).Directory(cli.OutDir)
}

// withDocker gives a container the host's Docker engine: Debian's docker
// CLI (installed before the source is mounted, so the layer is reused
// until the image changes) and the socket at cli.DockerSocket, named by
// DOCKER_HOST.
func withDocker(c *dagger.Container, dockerSocket *dagger.Socket) *dagger.Container {
	return c.WithExec(cli.InstallDockerCLICmd()).
		WithUnixSocket(cli.DockerSocket, dockerSocket).
		WithEnvVariable(cli.EnvDockerHost, cli.DockerHost())
}

// previewContainer is the CLI with the host's Docker engine.
func (m *Darktower) previewContainer(dockerSocket *dagger.Socket) *dagger.Container {
	c := withDocker(m.goContainer(), dockerSocket).
		WithMountedCache(cli.PreviewCache, dag.CacheVolume("darktower-preview"))
	return m.withCLI(c)
}

// PreviewUp builds every image for the engine's platform (build-all, not
// signed, with the vulnerability gate) and deploys them as pull request
// pr's preview: a kind cluster pr-<N> on the Docker engine behind
// dockerSocket (the host's, e.g. --docker-socket=/var/run/docker.sock),
// created or updated. Same as `go run . build-all --platforms P --no-sign
// && go run . preview up --pr N`.
//
// +cache="never"
func (m *Darktower) PreviewUp(
	ctx context.Context,
	// The Docker engine's socket (kind creates the cluster there).
	dockerSocket *dagger.Socket,
	// The pull request number.
	pr int,
	// The commit previewed (default: the source's HEAD, which is what is built).
	// +optional
	commit string,
	// How long the preview lives before reap removes it (a Go duration; default: the CLI's, 72h).
	// +optional
	ttl string,
	// The kind node image: auto, built, upstream or an image reference (default: the CLI's, auto).
	// +optional
	nodeImage string,
	// A prepared Trivy DB directory.
	// +optional
	vulnDb *dagger.Directory,
) (string, error) {
	platform, err := dag.DefaultPlatform(ctx)
	if err != nil {
		return "", err
	}
	b := cli.BuildAll{Platforms: []string{string(platform)}, NoSign: true}
	c := withVulnDB(m.previewContainer(dockerSocket), vulnDb, &b)
	return perCall(c).
		WithExec(cli.BuildAllCmd(b)).
		WithExec(cli.PreviewUpCmd(cli.PreviewUp{PR: pr, Commit: commit, TTL: ttl, NodeImage: nodeImage})).
		Stdout(ctx)
}

// PreviewDown deletes pull request pr's preview (its kind cluster) from
// the Docker engine behind dockerSocket. Same as `go run . preview down --pr N`.
//
// +cache="never"
func (m *Darktower) PreviewDown(
	ctx context.Context,
	// The Docker engine's socket.
	dockerSocket *dagger.Socket,
	// The pull request number.
	pr int,
) (string, error) {
	return perCall(m.previewContainer(dockerSocket)).WithExec(cli.PreviewDownCmd(pr)).Stdout(ctx)
}

// PreviewList lists the previews on the Docker engine behind dockerSocket:
// pull request, cluster, age, commit, expiry and state. Same as
// `go run . preview list`.
//
// +cache="never"
func (m *Darktower) PreviewList(
	ctx context.Context,
	// The Docker engine's socket.
	dockerSocket *dagger.Socket,
) (string, error) {
	return perCall(m.previewContainer(dockerSocket)).WithExec(cli.PreviewListCmd()).Stdout(ctx)
}

// PreviewReap deletes the previews older than ttl, past their own expiry,
// or unreadable, on the Docker engine behind dockerSocket. Same as
// `go run . preview reap --ttl 72h`.
//
// +cache="never"
func (m *Darktower) PreviewReap(
	ctx context.Context,
	// The Docker engine's socket.
	dockerSocket *dagger.Socket,
	// Age past which a preview is removed (a Go duration).
	// +optional
	// +default="72h"
	ttl string,
) (string, error) {
	return perCall(m.previewContainer(dockerSocket)).WithExec(cli.PreviewReapCmd(ttl)).Stdout(ctx)
}
