package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/scan"
	"github.com/darktower/delivery/pipelines/sign"
)

// TestPlatformImagesGoThroughThePipeline builds the platform set
// (images/platform: Flagger and Traefik from their tool modules, as canary
// install does) for linux/amd64 through every stage a service's image
// takes: each image with its SPDX and CycloneDX SBOMs listing the pinned
// upstream module, judged by the gate (the flow tests' offline DB, as for
// the services) and signed with three attestations that verify, published
// as release publishes (the services' verification reads a registry).
//
// Heavy for a unit test: Traefik's cold compile takes ~3 min on 2 cores
// (a warm Go build cache: seconds; its links stay ~10 s). Skipped with
// -short; it runs one go build at a time (Jobs 1), beside the other
// packages' tests in `make test`.
func TestPlatformImagesGoThroughThePipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds Flagger and Traefik from the module proxy (Traefik ~3 min cold)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	if _, err := sign.DevKey(keys); err != nil {
		t.Fatal(err)
	}
	repo := testreg.InProcess(t) + "/darktower"
	out := t.TempDir()
	var progress bytes.Buffer
	start := time.Now()
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Images: PlatformImages, Platforms: []string{"linux/amd64"},
		Out: out, Base: build.BaseSkeleton, Version: "1.0.0", SourceURL: "https://example.com/src", Env: fixedEnv, VulnDB: testDB,
		Key: filepath.Join(keys, "cosign.key"), DevKeyDir: t.TempDir(), Push: repo, Jobs: 1, Progress: &progress})
	t.Logf("FIGURE build-all --images %s --platforms linux/amd64 (Flagger, Traefik; SBOMs, scan, sign, push) in %s", PlatformImages,
		time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	pub, err := os.ReadFile(filepath.Join(keys, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Scan == nil || m.Scan.Source != scan.SourceTrivy || m.Scan.Threshold != "CRITICAL" {
		t.Errorf("scan record %+v: want the trivy source and the CRITICAL gate", m.Scan)
	}
	want := map[string][2]string{"flagger": {"github.com/fluxcd/flagger", "v1.36.1"}, "traefik": {"github.com/traefik/traefik/v3", "v3.6.12"}}
	if len(m.Images) != len(want) {
		t.Fatalf("built %d images, want flagger and traefik", len(m.Images))
	}
	for _, img := range m.Images {
		mod, ok := want[img.Service]
		if !ok || len(img.Platforms) != 1 || img.Platforms[0].Platform.String() != "linux/amd64" {
			t.Errorf("%s: unexpected image %+v", img.Service, img)
			continue
		}
		p := img.Platforms[0]
		t.Logf("FIGURE %s linux/amd64: %s, %.1f MB compressed, %.1f MB uncompressed, %d SBOM packages, vulnerabilities %+v",
			img.Service, p.Digest, float64(p.CompressedSize)/1e6, float64(p.UncompressedSize)/1e6, sbomPackages(p), p.Vulnerabilities)
		if p.SBOM == nil {
			t.Errorf("%s: no SBOM recorded", img.Service)
		} else {
			spdx := readJSON[struct {
				Packages []struct{ Name, VersionInfo string } `json:"packages"`
			}](t, filepath.Join(out, p.SBOM.SPDX))
			found := false
			for _, pkg := range spdx.Packages {
				found = found || pkg.Name == mod[0] && pkg.VersionInfo == mod[1]
			}
			if !found {
				t.Errorf("%s: SPDX %s does not list %s %s", img.Service, p.SBOM.SPDX, mod[0], mod[1])
			}
			cdx := readJSON[struct {
				Components []struct{ Name, Version string } `json:"components"`
			}](t, filepath.Join(out, p.SBOM.CycloneDX))
			found = false
			for _, c := range cdx.Components {
				found = found || c.Name == mod[0] && c.Version == mod[1]
			}
			if !found {
				t.Errorf("%s: CycloneDX %s does not list %s %s", img.Service, p.SBOM.CycloneDX, mod[0], mod[1])
			}
		}
		if v := p.Vulnerabilities; v == nil || v.Blocking != 0 {
			t.Errorf("%s: scan verdict %+v: want judged and passed", img.Service, v)
		}
		if _, err := os.Stat(filepath.Join(out, scan.Dir, img.Service+"_linux_amd64.trivy.json")); err != nil {
			t.Errorf("%s: no scan report: %v", img.Service, err)
		}
		if img.Signature == nil || len(img.Signature.Predicates) != 3 {
			t.Errorf("%s: signature %+v: want signed with three attestations", img.Service, img.Signature)
			continue
		}
		v, err := sign.Verify(context.Background(), sign.VerifyOptions{Image: img.Pushed, PublicKey: pub})
		if err != nil {
			t.Errorf("%s: %s does not verify: %v", img.Service, img.Pushed, err)
		} else if v.Signatures != 1 || v.Attestations[sign.PredicateCycloneDX] != 1 || v.Attestations[sign.PredicateVuln] != 1 || v.Attestations[sign.PredicateSLSA] != 1 {
			t.Errorf("%s: verified %+v, want one signature and one attestation of each type", img.Service, v)
		}
	}
}

func sbomPackages(p build.PlatformImage) int {
	if p.SBOM == nil {
		return 0
	}
	return p.SBOM.Packages
}

func readJSON[T any](t *testing.T, path string) T {
	t.Helper()
	var v T
	raw, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(raw, &v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}
