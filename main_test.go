package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
)

func TestCLIDispatch(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"help"}, 0, "version", ""},
		{nil, 2, "commands:", ""},
		{[]string{"no-such-command"}, 2, "", `unknown command "no-such-command"`},
		{[]string{"version"}, 0, "darktower delivery", ""},
		{[]string{"version", "extra"}, 2, "", "version takes no arguments"},
		{[]string{"update-base", "extra"}, 2, "", "update-base takes no arguments"},
		{[]string{"platform-charts"}, 0, "linkerd-control-plane\thttps://helm.linkerd.io/stable", ""},
		{[]string{"platform-charts", "--file", "no-such.yaml"}, 1, "", "no-such.yaml"},
		{[]string{"dev-secrets"}, 0, "name: dark-tower-internal-ca", "local development only"},
		{[]string{"build-all", "--no-such-flag"}, 2, "", "build-all: unknown flag: --no-such-flag (`go run . build-all -h` lists its flags)"},
		{[]string{"build-all", "--jobs", "many"}, 2, "", `invalid argument "many" for "--jobs"`},
		{[]string{"buld-all"}, 2, "", `unknown command "buld-all"; run ` + "`go run . help`" + ` for the list (did you mean build-all?)`},
		// Go's flag package, the CLI's before cobra, took -name as well as --name.
		{[]string{"platform-charts", "-file", "no-such.yaml"}, 1, "", "no-such.yaml"},
		{[]string{"platform-charts", "-file=no-such.yaml"}, 1, "", "no-such.yaml"},
		{[]string{"build-all", "-h"}, 0, "      --vuln-source string", ""},
		{[]string{"sim", "up", "-help"}, 0, "      --cache-dir string", ""},
		{[]string{"-x"}, 2, "", "unknown shorthand flag: 'x' in -x (`go run . -h` lists its flags)"},
		// An empty value, as .github/workflows/pr.yml passes --modules=.
		{[]string{"ci", "--modules=", "--cluster-checks"}, 2, "", "ci --cluster-checks needs --pr N"},
		{[]string{"preview", "up", "--help"}, 0, "      --node-image string", ""},
		{[]string{"completion", "bash"}, 0, "__start_darktower", ""},
		{[]string{"sim"}, 2, "", "sim needs a subcommand: up, down, status or kubeconfig"},
		{[]string{"sim", "upp"}, 2, "", `sim "upp": use up, down, status or kubeconfig`},
		{[]string{"cluster", "list", "extra"}, 2, "", `cluster list: unexpected argument "extra"`},
		{[]string{"preview", "reap", "--pr", "x"}, 2, "", `invalid argument "x" for "--pr"`},
		{[]string{"build-all", "--services", "nope", "--base", "skeleton"}, 1, "", `unknown service "nope"`},
		{[]string{"chaos"}, 2, "", "chaos needs a subcommand: run"},
		{[]string{"chaos", "run"}, 2, "", "exactly one of --cluster NAME"},
		{[]string{"chaos", "run", "--cluster", "x", "--only", "no-such-engine"}, 2, "", `no engine "no-such-engine" in infra/overlays/preview/chaos (engines: ac-service-pod-delete,`},
		{[]string{"ci", "--cluster-checks"}, 2, "", "ci --cluster-checks needs --pr N"},
		{[]string{"ci", "--cluster-checks", "--pr", "7", "--chaos-only", "nope"}, 2, "", `--chaos-only: no engine "nope"`},
		{[]string{"promote"}, 2, "", "promote needs --tag vX.Y.Z, --from REGISTRY/PREFIX, --to REGISTRY/PREFIX and either --key cosign.pub or --certificate-identity"},
		{[]string{"promote", "--tag", "v1.0.0", "--from", "a.example/dt", "--to", "b.example/dt", "--key", "no-such.pub"}, 1, "", "--key: open no-such.pub"},
		{[]string{"promote", "--tag", "1.2", "--from", "a.example/dt", "--to", "a.example/dt", "--certificate-identity", "id", "--source-url", "https://example.com/r"}, 1, "",
			`--tag "1.2" is not a release tag`},
		{[]string{"promote", "--tag", "v1.0.0", "--from", "a.example/dt", "--to", "a.example/dt", "--certificate-identity", "id", "--source-url", "https://example.com/r"}, 1, "",
			`--from and --to are both "a.example/dt"`},
		{[]string{"promote", "--tag", "v1.0.0", "--from", "a.example/dt", "--to", "b.example/dt", "--certificate-identity", "id", "--source-url", "https://example.com/r", "--services", "nope"}, 1, "", `--services: unknown service "nope"`},
		{[]string{"promote", "--tag", "v1.0.0", "--from", "a.example/dt", "--to", "b.example/dt", "--certificate-identity", "id", "--source-url", "https://example.com/r", "--services", "ac-service"}, 1, "",
			"no new image for global-controller"},
		// Every image of a release is pinned somewhere: the flag gateway is
		// not in the services' overlay, so that overlay alone is refused
		// (before anything is fetched; the default pins it in the flag
		// system's platform component too).
		{[]string{"promote", "--tag", "v1.0.0", "--from", "a.example/dt", "--to", "b.example/dt", "--certificate-identity", "id", "--source-url", "https://example.com/r",
			"--kustomization", "infra/overlays/prod/kustomization.yaml"}, 1, "", "no images: entry for flag-gateway in infra/overlays/prod/kustomization.yaml"},
		{[]string{"verify"}, 2, "", "verify needs --image REF and either --key cosign.pub or --certificate-identity"},
		{[]string{"canary", "roll"}, 2, "", "canary roll needs the cluster: --pr N (a preview) or --cluster NAME (a kind cluster)"},
		{[]string{"canary", "roll", "--pr", "7", "--cluster", "x"}, 2, "", "canary roll: give --pr N or --cluster NAME, not both"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), c.args, &stdout, &stderr); code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, stderr.String())
		}
		if !strings.Contains(stdout.String(), c.out) || !strings.Contains(stderr.String(), c.err) {
			t.Errorf("%v: stdout %q stderr %q", c.args, stdout.String(), stderr.String())
		}
	}
}

func TestCanaryRollReleaseName(t *testing.T) {
	for ref, want := range map[string]string{
		"localhost:5001/darktower/ac-service@sha256:abc": "sha256:abc",
		"registry.example:5000/ac-service:v1.2.3":        "v1.2.3",
		"registry.example:5000/ac-service":               "registry.example:5000/ac-service",
		"ac-service:v1":                                  "v1",
	} {
		if got := releaseName(ref); got != want {
			t.Errorf("releaseName(%q) = %q, want %q", ref, got, want)
		}
	}
}

// TestREADMEAirGappedBuildAll runs the README's air-gapped main job through
// the CLI, on this repository (one platform, to keep it quick): with a
// prepared vulnerability DB it builds, writes SBOMs and passes the gate;
// with a CRITICAL finding it exits 3 naming the CVE and claims nothing;
// without a DB it fails closed, saying how to supply one.
func TestREADMEAirGappedBuildAll(t *testing.T) {
	db := t.TempDir()
	if err := vulndbtest.Write(db, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	args := []string{"build-all", "--base", "skeleton", "--platforms", "linux/amd64", "--out", out, "--cache-dir", t.TempDir(), "--sbom-cache-dir", t.TempDir(), "--stage-cache-dir", t.TempDir(), "--dev-key-dir", t.TempDir()}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append(args, "--vuln-db", db), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"build: ac-service", "build: global-controller", "build: meeting-controller", "build: media-handler", "build: flag-gateway",
		"sbom: 5 document pair(s)", "scan: passed the CRITICAL gate", "sign: signed with this machine's DEVELOPMENT key", "build-all: 5 image(s)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in:\n%s", want, stdout.String())
		}
	}
	m, err := build.ReadManifest(filepath.Join(out, build.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	const module = "golang.org/x/crypto" // linked by ac-service only
	for _, im := range m.Images {
		p := im.Platforms[0]
		if p.SBOM == nil || p.SBOM.Packages < 10 || p.Vulnerabilities == nil {
			t.Errorf("%s: manifest lacks the SBOM record or scan counts: %+v", im.Service, p)
		}
		if im.Signature == nil || !im.Signature.Development || len(im.Signature.Predicates) != 3 {
			t.Errorf("%s: manifest lacks the signature record: %+v", im.Service, im.Signature)
		}
	}
	if m.Scan == nil || m.Scan.SARIF == "" {
		t.Fatalf("manifest has no scan record: %+v", m.Scan)
	}
	if _, err := os.Stat(filepath.Join(out, m.Scan.SARIF)); err != nil {
		t.Error(err)
	}

	// A CRITICAL advisory for a module only ac-service links blocks the build.
	var version string
	for _, d := range readSPDXPackages(t, filepath.Join(out, "sbom", "ac-service_linux_amd64.spdx.json")) {
		if d[0] == module {
			version = strings.TrimPrefix(d[1], "v")
		}
	}
	if version == "" {
		t.Fatalf("%s not in ac-service's SBOM", module)
	}
	critical := t.TempDir()
	if err := vulndbtest.Write(critical, time.Now(), vulndbtest.Advisory{ID: "CVE-2099-1000", Severity: "CRITICAL", Title: "fixture",
		Package: module, Vulnerable: "<= " + version, Fixed: "99.0.0"}); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), append(args, "--vuln-db", critical), &stdout, &stderr)
	if code != exitBlocked || !strings.Contains(stderr.String(), "CVE-2099-1000 in ac-service") || !strings.Contains(stderr.String(), module) {
		t.Fatalf("want exit %d naming CVE-2099-1000 in ac-service, got %d\nstderr:\n%s", exitBlocked, code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, build.ManifestFile)); !os.IsNotExist(err) {
		t.Errorf("a blocked build left manifest.json claiming images: %v", err)
	}
	summary, _ := os.ReadFile(filepath.Join(out, build.SummaryFile))
	if !strings.Contains(string(summary), "**Blocking**") {
		t.Errorf("the summary does not list the blocking finding:\n%s", summary)
	}

	// No DB: fails closed, before building, with the way to supply one.
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), append(args, "--vuln-db", t.TempDir()), &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "no vulnerability database") || !strings.Contains(stderr.String(), "--vuln-db DIR") || strings.Contains(stdout.String(), "build: ac-service") {
		t.Fatalf("want a closed failure before building, got %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
}

// readSPDXPackages lists (name, version) pairs of an SPDX JSON document.
func readSPDXPackages(t *testing.T, path string) [][2]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Packages []struct {
			Name    string `json:"name"`
			Version string `json:"versionInfo"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, p := range doc.Packages {
		out = append(out, [2]string{p.Name, p.Version})
	}
	return out
}

func TestPinImagesCommand(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("infra/overlays/local/common/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kust := filepath.Join(dir, "kustomization.yaml")
	os.WriteFile(kust, raw, 0o644)
	digest := "sha256:" + strings.Repeat("b", 64)
	var images []string
	for _, s := range []string{"ac-service", "global-controller", "meeting-controller", "media-handler"} {
		images = append(images, `{"service":"`+s+`","digest":"`+digest+`"}`)
	}
	manifest := filepath.Join(dir, "manifest.json")
	os.WriteFile(manifest, []byte(`{"version":"9.9.9","images":[`+strings.Join(images, ",")+`]}`), 0o644)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"pin-images", "--manifest", manifest, "--kustomization", kust, "--registry", "localhost:5001/darktower"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	after, _ := os.ReadFile(kust)
	if strings.Count(string(after), digest) != 4 || !strings.Contains(stdout.String(), "pinned to build 9.9.9") {
		t.Fatalf("stdout %q, file:\n%s", stdout.String(), after)
	}
	if code := run(context.Background(), []string{"pin-images", "--kustomization", kust}, &stdout, &stderr); code != 2 {
		t.Errorf("missing --registry: exit %d", code)
	}
}
