// Package cli turns the Dagger functions' typed arguments into the
// darktower CLI's command lines and environment, in one place, so that a
// wrong flag or variable name fails this package's tests (which ask the
// real CLI) instead of a user's `dagger call`.
package cli

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Paths inside the pipeline's container.
const (
	Binary     = "/usr/local/bin/darktower" // the CLI, built from the source
	SourceDir  = "/src"                     // the repository
	OutDir     = "/out"                     // build-all --out
	DBCache    = "/cache/trivy-db"          // --db-cache-dir (a cache volume)
	BaseCache  = "/cache/base-images"       // --cache-dir (a cache volume)
	SBOMCache  = "/cache/sbom"              // --sbom-cache-dir (a cache volume)
	StageCache = "/cache/stages"            // --stage-cache-dir (a cache volume)
	VulnDBDir  = "/vuln-db"                 // --vuln-db, when a prepared DB is given
	ImageTar   = "/out/image.tar"           // export-image --file
	KeyFile    = "/run/secrets/cosign.pub"  // verify --key
	// DockerSocket is where the preview functions mount the host's Docker
	// socket; DOCKER_HOST names it for kind's Docker provider (the docker CLI).
	DockerSocket = "/var/run/docker.sock"
	// PreviewCache is the preview's --cache-dir (a cache volume): what a
	// built node image is made from.
	PreviewCache = "/cache/preview"
	// VerdictFile is where ci and build-all --record-verdict write their
	// outcome, in OutDir (ci-verdict reads it).
	VerdictFile = "ci.json"
)

// Environment variables the CLI reads; the secret ones are only ever set
// with Container.withSecretVariable.
const (
	EnvSigningKey       = "DARKTOWER_COSIGN_KEY"        // --key env://DARKTOWER_COSIGN_KEY (secret)
	EnvKeyPassword      = "COSIGN_PASSWORD"             // the key's password (secret)
	EnvRegistryUsername = "DARKTOWER_REGISTRY_USERNAME" // registry user for --push
	EnvRegistryPassword = "DARKTOWER_REGISTRY_PASSWORD" // registry password or token (secret)
	// promote: the release registry's credentials (the push registry's
	// above are production's).
	EnvSourceRegistryUsername = "DARKTOWER_SOURCE_REGISTRY_USERNAME"
	EnvSourceRegistryPassword = "DARKTOWER_SOURCE_REGISTRY_PASSWORD" // (secret)
	EnvOIDCRequestURL         = "ACTIONS_ID_TOKEN_REQUEST_URL"       // GitHub Actions' OIDC endpoint (keyless signing)
	EnvOIDCRequestToken       = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"     // and the job's token for it (secret)
	EnvWorkflowRef            = "GITHUB_WORKFLOW_REF"                // the provenance's builder id
	EnvServerURL              = "GITHUB_SERVER_URL"
	EnvDockerHost             = "DOCKER_HOST" // unix://DockerSocket in the preview functions
	// EnvCallID is not read by the CLI: it carries CallID into the
	// container steps that must run again on every call (it is part of
	// their cache key).
	EnvCallID = "DARKTOWER_CALL_ID"
)

// CallID is a value no other call has: the time and 64 random bits.
func CallID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return time.Now().UTC().Format(time.RFC3339Nano) + "-" + hex.EncodeToString(b[:])
}

// BuildAll is build-all's flags as the Dagger functions take them; the
// zero value of each leaves the CLI's default.
type BuildAll struct {
	Services  []string
	Images    string // the specs' directory (the CLI's default: images; images/platform: Flagger and Traefik)
	Platforms []string
	Base      string
	Version   string
	Severity  string
	Push      string
	SourceURL string
	VulnDB    bool // a prepared DB is mounted at VulnDBDir
	SignKey   bool // a signing key is in $EnvSigningKey
	NoSign    bool
	Jobs      int
	// RecordVerdict: build-all writes its outcome to OutDir/VerdictFile
	// (the function keeps the outputs whatever the exit status).
	RecordVerdict bool
}

// Args is the flags, after the command name.
func (b BuildAll) Args() []string {
	args := []string{"--out", OutDir, "--db-cache-dir", DBCache, "--cache-dir", BaseCache, "--sbom-cache-dir", SBOMCache, "--stage-cache-dir", StageCache}
	add := func(flag, value string) {
		if value != "" {
			args = append(args, flag, value)
		}
	}
	add("--services", strings.Join(b.Services, ","))
	add("--images", b.Images)
	add("--platforms", strings.Join(b.Platforms, ","))
	add("--base", b.Base)
	add("--version", b.Version)
	add("--severity", b.Severity)
	add("--push", b.Push)
	add("--source-url", b.SourceURL)
	if b.VulnDB {
		add("--vuln-db", VulnDBDir)
	}
	if b.SignKey {
		add("--key", "env://"+EnvSigningKey)
	}
	if b.NoSign {
		args = append(args, "--no-sign")
	}
	if b.Jobs > 0 {
		add("--jobs", strconv.Itoa(b.Jobs))
	}
	return args
}

// A Verdict is what the CLI records in VerdictFile.
type Verdict struct {
	Passed bool `json:"passed"`
	Checks []struct {
		Name    string `json:"name"`
		Passed  bool   `json:"passed"`
		Error   string `json:"error"`
		Blocked bool   `json:"blocked"` // the vulnerability gate refused
	} `json:"checks"`
}

// BrokenBuild reads a recorded verdict and returns an error when a check
// failed for a reason other than the vulnerability gate: a gate that
// blocks leaves reports worth returning (and ci-verdict to fail the job),
// a build that broke does not.
func BrokenBuild(raw []byte) error {
	var v Verdict
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s: %w", VerdictFile, err)
	}
	if len(v.Checks) == 0 {
		return fmt.Errorf("%s records no checks", VerdictFile)
	}
	for _, c := range v.Checks {
		if !c.Passed && !c.Blocked {
			return fmt.Errorf("%s failed: %s", c.Name, c.Error)
		}
	}
	return nil
}

// BuildAllCmd is `darktower build-all …` (RecordVerdict is build-all's
// alone: ci always records, release never keeps a failed run).
func BuildAllCmd(b BuildAll) []string {
	cmd := append([]string{Binary, "build-all"}, b.Args()...)
	if b.RecordVerdict {
		cmd = append(cmd, "--record-verdict")
	}
	return cmd
}

// ReleaseCmd is `darktower release --tag TAG …`.
func ReleaseCmd(tag string, b BuildAll) []string {
	return append([]string{Binary, "release", "--tag", tag}, b.Args()...)
}

// CICmd is `darktower ci --without-docker …`: the PR check in a container
// with no Docker engine.
func CICmd(b BuildAll) []string {
	return append([]string{Binary, "ci", "--without-docker"}, b.Args()...)
}

// ClusterChecks are `ci --cluster-checks`' arguments.
type ClusterChecks struct {
	PR            int
	NodeImage     string
	ChaosDuration string
	InstallLitmus bool
}

// CIClusterChecksCmd is the PR check with its cluster stages: build-all,
// the build deployed into cluster pr-N, the chaos stage (the engine's
// Docker socket needed; the Docker tests are still skipped).
func CIClusterChecksCmd(b BuildAll, c ClusterChecks) []string {
	cmd := append(CICmd(b), "--cluster-checks", "--pr", strconv.Itoa(c.PR), "--cluster-cache-dir", PreviewCache)
	if c.NodeImage != "" {
		cmd = append(cmd, "--node-image", c.NodeImage)
	}
	if c.ChaosDuration != "" {
		cmd = append(cmd, "--chaos-duration", c.ChaosDuration)
	}
	if c.InstallLitmus {
		cmd = append(cmd, "--install-litmus")
	}
	return cmd
}

// ChaosRunCmd is `darktower chaos run --cluster pr-N`: the chaos stage
// against pull request pr's preview, its JUnit and summary into OutDir.
func ChaosRunCmd(pr int, only, duration string, installLitmus bool) []string {
	cmd := []string{Binary, "chaos", "run", "--cluster", "pr-" + strconv.Itoa(pr),
		"--junit", OutDir + "/chaos/junit.xml", "--summary", OutDir + "/summary.md"}
	if only != "" {
		cmd = append(cmd, "--only", only)
	}
	if duration != "" {
		cmd = append(cmd, "--duration", duration)
	}
	if installLitmus {
		cmd = append(cmd, "--install-litmus")
	}
	return cmd
}

// CIVerdictCmd reads a ci run's result from dir.
func CIVerdictCmd(dir string) []string { return []string{Binary, "ci-verdict", "--out", dir} }

// ExportImageCmd writes one service's image (one platform) to ImageTar.
func ExportImageCmd(service, platform string) []string {
	return []string{Binary, "export-image", "--out", OutDir, "--service", service, "--platform", platform, "--file", ImageTar}
}

// VerifyCmd is `darktower verify`: against the public key at KeyFile when
// keyFile, else keyless against the signing workflow's identity.
func VerifyCmd(image string, keyFile bool, identity, issuer string) []string {
	cmd := []string{Binary, "verify", "--image", image}
	if keyFile {
		return append(cmd, "--key", KeyFile)
	}
	cmd = append(cmd, "--certificate-identity", identity)
	if issuer != "" {
		cmd = append(cmd, "--certificate-oidc-issuer", issuer)
	}
	return cmd
}

// Promote is promote's flags as the Dagger function takes them.
type Promote struct {
	Tag, From, To string
	KeyFile       bool // the public key is mounted at KeyFile; else keyless
	Identity      string
	Issuer        string
	SourceURL     string
}

// PromoteCmd is `darktower promote`: the summary and the pins' patch
// into OutDir.
func PromoteCmd(p Promote) []string {
	cmd := []string{Binary, "promote", "--tag", p.Tag, "--from", p.From, "--to", p.To, "--out", OutDir}
	if p.KeyFile {
		cmd = append(cmd, "--key", KeyFile)
	} else {
		cmd = append(cmd, "--certificate-identity", p.Identity)
		if p.Issuer != "" {
			cmd = append(cmd, "--certificate-oidc-issuer", p.Issuer)
		}
	}
	if p.SourceURL != "" {
		cmd = append(cmd, "--source-url", p.SourceURL)
	}
	return cmd
}

// RegistryHost is the registry part of a repository prefix such as
// ghcr.io/darktower (what Container.withRegistryAuth is keyed by).
func RegistryHost(prefix string) string {
	host, _, _ := strings.Cut(prefix, "/")
	return host
}

// DockerHost is DOCKER_HOST's value for the mounted socket.
func DockerHost() string { return "unix://" + DockerSocket }

// InstallDockerCLICmd installs Debian's docker.io (the docker CLI kind's
// Docker provider runs; no daemon is started) without recommends.
func InstallDockerCLICmd() []string {
	return []string{"sh", "-c", "apt-get update && apt-get install -y --no-install-recommends docker.io && rm -rf /var/lib/apt/lists/*"}
}

// PreviewUp is `preview up`'s flags as the Dagger function takes them; the
// zero value of each leaves the CLI's default (Commit: the source's HEAD).
type PreviewUp struct {
	PR        int
	Commit    string
	TTL       string
	NodeImage string
}

// PreviewUpCmd deploys build-all's output (OutDir) as pull request
// p.PR's preview.
func PreviewUpCmd(p PreviewUp) []string {
	cmd := []string{Binary, "preview", "up", "--pr", strconv.Itoa(p.PR), "--dist", OutDir, "--cache-dir", PreviewCache}
	add := func(flag, value string) {
		if value != "" {
			cmd = append(cmd, flag, value)
		}
	}
	add("--commit", p.Commit)
	add("--ttl", p.TTL)
	add("--node-image", p.NodeImage)
	return cmd
}

// PreviewDownCmd removes pull request pr's preview.
func PreviewDownCmd(pr int) []string {
	return []string{Binary, "preview", "down", "--pr", strconv.Itoa(pr)}
}

// PreviewListCmd lists the previews on the Docker engine.
func PreviewListCmd() []string { return []string{Binary, "preview", "list"} }

// PreviewReapCmd removes the previews older than ttl (a Go duration; empty:
// the CLI's default, 72h).
func PreviewReapCmd(ttl string) []string {
	cmd := []string{Binary, "preview", "reap"}
	if ttl != "" {
		cmd = append(cmd, "--ttl", ttl)
	}
	return cmd
}
