package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestBuildAllArgsCarryOnlyWhatWasGiven(t *testing.T) {
	got := BuildAllCmd(BuildAll{})
	want := []string{Binary, "build-all", "--out", OutDir, "--db-cache-dir", DBCache, "--cache-dir", BaseCache, "--sbom-cache-dir", SBOMCache, "--stage-cache-dir", StageCache}
	if !slices.Equal(got, want) {
		t.Errorf("defaults:\n got %q\nwant %q", got, want)
	}
	got = ReleaseCmd("v1.2.3", BuildAll{Services: []string{"ac-service", "media-handler"}, Platforms: []string{"linux/amd64"},
		Base: "skeleton", Severity: "HIGH", Push: "ghcr.io/darktower", VulnDB: true, SignKey: true, Jobs: 2})
	want = []string{Binary, "release", "--tag", "v1.2.3", "--out", OutDir, "--db-cache-dir", DBCache, "--cache-dir", BaseCache, "--sbom-cache-dir", SBOMCache, "--stage-cache-dir", StageCache,
		"--services", "ac-service,media-handler", "--platforms", "linux/amd64", "--base", "skeleton", "--severity", "HIGH",
		"--push", "ghcr.io/darktower", "--vuln-db", VulnDBDir, "--key", "env://" + EnvSigningKey, "--jobs", "2"}
	if !slices.Equal(got, want) {
		t.Errorf("release:\n got %q\nwant %q", got, want)
	}
	if got := CICmd(BuildAll{NoSign: true}); !slices.Contains(got, "--without-docker") || got[len(got)-1] != "--no-sign" {
		t.Errorf("ci: %q", got)
	}
	if got := VerifyCmd("r/x:1", false, "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1.0.0", ""); slices.Contains(got, "--key") || !slices.Contains(got, "--certificate-identity") {
		t.Errorf("keyless verify: %q", got)
	}
	if got, want := PromoteCmd(Promote{Tag: "v1.2.3", From: "ghcr.io/o", To: "reg.example/prod", Identity: "id"}),
		[]string{Binary, "promote", "--tag", "v1.2.3", "--from", "ghcr.io/o", "--to", "reg.example/prod", "--out", OutDir, "--certificate-identity", "id"}; !slices.Equal(got, want) {
		t.Errorf("promote:\n got %q\nwant %q", got, want)
	}
	for prefix, host := range map[string]string{"ghcr.io/darktower": "ghcr.io", "localhost:5000/a/b": "localhost:5000", "registry.example": "registry.example"} {
		if got := RegistryHost(prefix); got != host {
			t.Errorf("RegistryHost(%q) = %q, want %q", prefix, got, host)
		}
	}
}

func TestPreviewCommandLines(t *testing.T) {
	for _, c := range []struct {
		got, want []string
	}{
		{PreviewUpCmd(PreviewUp{PR: 42}), []string{Binary, "preview", "up", "--pr", "42", "--dist", OutDir, "--cache-dir", PreviewCache}},
		{PreviewUpCmd(PreviewUp{PR: 7, Commit: "0123abc", TTL: "24h", NodeImage: "upstream"}), []string{Binary, "preview", "up", "--pr", "7",
			"--dist", OutDir, "--cache-dir", PreviewCache, "--commit", "0123abc", "--ttl", "24h", "--node-image", "upstream"}},
		{PreviewDownCmd(42), []string{Binary, "preview", "down", "--pr", "42"}},
		{PreviewListCmd(), []string{Binary, "preview", "list"}},
		{PreviewReapCmd(""), []string{Binary, "preview", "reap"}},
		{PreviewReapCmd("72h"), []string{Binary, "preview", "reap", "--ttl", "72h"}},
		{ChaosRunCmd(42, "", "", false), []string{Binary, "chaos", "run", "--cluster", "pr-42", "--junit", OutDir + "/chaos/junit.xml", "--summary", OutDir + "/summary.md"}},
		{CIClusterChecksCmd(BuildAll{}, ClusterChecks{PR: 42}), append(CICmd(BuildAll{}), "--cluster-checks", "--pr", "42", "--cluster-cache-dir", PreviewCache)},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("\n got %q\nwant %q", c.got, c.want)
		}
	}
	if DockerHost() != "unix:///var/run/docker.sock" {
		t.Errorf("DockerHost() = %q", DockerHost())
	}
	if got := InstallDockerCLICmd(); got[0] != "sh" || !strings.Contains(got[2], "apt-get install -y --no-install-recommends docker.io") {
		t.Errorf("InstallDockerCLICmd() = %q", got)
	}
}

// The real CLI is asked which flags each command takes: every flag the
// Dagger functions pass must be one of them.
func TestEveryFlagIsOneTheCLIAccepts(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "darktower")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..") // the repository root: the CLI's module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the CLI: %v\n%s", err, out)
	}
	every := BuildAll{Services: []string{"s"}, Images: "images/platform", Platforms: []string{"linux/amd64"}, Base: "b", Version: "v", Severity: "HIGH",
		Push: "r/p", SourceURL: "https://example.com/r", VulnDB: true, SignKey: true, NoSign: true, Jobs: 1, RecordVerdict: true}
	for _, cmd := range [][]string{
		BuildAllCmd(every), ReleaseCmd("v1.0.0", every), CICmd(every), CIVerdictCmd(OutDir),
		ExportImageCmd("s", "linux/amd64"), VerifyCmd("r/x:1", true, "", ""), VerifyCmd("r/x:1", false, "id", "https://issuer"),
		PreviewUpCmd(PreviewUp{PR: 1, Commit: "c", TTL: "1h", NodeImage: "auto"}), PreviewDownCmd(1), PreviewListCmd(), PreviewReapCmd("1h"),
		CIClusterChecksCmd(every, ClusterChecks{PR: 1, NodeImage: "auto", ChaosDuration: "20s", InstallLitmus: true}),
		ChaosRunCmd(1, "e", "20s", true),
		PromoteCmd(Promote{Tag: "v1.0.0", From: "a/b", To: "c/d", KeyFile: true, SourceURL: "https://example.com/r"}),
		PromoteCmd(Promote{Tag: "v1.0.0", From: "a/b", To: "c/d", Identity: "id", Issuer: "https://issuer"}),
	} {
		command := cmd[1:2]
		if cmd[1] == "preview" || cmd[1] == "chaos" { // a subcommand: preview up, down, list or reap; chaos run
			command = cmd[1:3]
		}
		help := cliHelp(t, bin, command...)
		for _, arg := range cmd[1+len(command):] {
			if name, ok := strings.CutPrefix(arg, "--"); ok && !help.flags[name] {
				t.Errorf("%s: the CLI has no flag --%s", strings.Join(command, " "), name)
			}
		}
		if cmd[1] == "build-all" {
			for _, env := range []string{EnvRegistryUsername, EnvRegistryPassword, EnvKeyPassword} {
				if !strings.Contains(help.text, env) {
					t.Errorf("build-all -h does not mention $%s, which the Dagger functions set", env)
				}
			}
		}
		if cmd[1] == "promote" {
			for _, env := range []string{EnvRegistryUsername, EnvRegistryPassword, EnvSourceRegistryUsername, EnvSourceRegistryPassword} {
				if !strings.Contains(help.text, env) {
					t.Errorf("promote -h does not mention $%s, which the Dagger function sets", env)
				}
			}
		}
	}
}

type help struct {
	text  string
	flags map[string]bool
}

// flagLine is a flag in cobra's help: "      --name type  usage", or
// "  -x, --name" for one with a shorthand.
var flagLine = regexp.MustCompile(`(?m)^  (?:-[a-z0-9], |    )--([a-z0-9-]+)`)

func cliHelp(t *testing.T, bin string, command ...string) help {
	t.Helper()
	cmd := exec.Command(bin, append(command, "-h")...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil { // -h is a request, not a mistake: it exits 0
		t.Fatalf("%s -h: %v\n%s", strings.Join(command, " "), err, out)
	}
	h := help{text: string(out), flags: map[string]bool{}}
	for _, m := range flagLine.FindAllStringSubmatch(h.text, -1) {
		h.flags[m[1]] = true
	}
	if len(h.flags) == 0 {
		t.Fatalf("%s -h lists no flags:\n%s", strings.Join(command, " "), out)
	}
	return h
}

func TestCallIDDiffersOnEveryCall(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := CallID()
		if seen[id] {
			t.Fatalf("CallID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestBrokenBuildTellsTheGateFromABreak(t *testing.T) {
	for raw, broken := range map[string]bool{
		`{"passed":true,"checks":[{"name":"build-all","passed":true}]}`:                                         false,
		`{"passed":false,"checks":[{"name":"build-all","passed":false,"error":"CVE-1 blocks","blocked":true}]}`: false,
		`{"passed":false,"checks":[{"name":"build-all","passed":false,"error":"go build: exit status 1"}]}`:     true,
		`{"passed":true,"checks":[]}`: true,
		`not json`:                    true,
	} {
		if err := BrokenBuild([]byte(raw)); (err != nil) != broken {
			t.Errorf("%s: %v, want broken=%v", raw, err, broken)
		}
	}
}
