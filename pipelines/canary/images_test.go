package canary

import (
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/flow"
)

// Install's progress names each platform image's digest, SBOMs, the scan's
// verdict and the signature (the build itself: flow's
// TestPlatformImagesGoThroughThePipeline).
func TestInstallReportsEachPlatformImagesDigestAndVerdict(t *testing.T) {
	amd64 := catalog.Platform{OS: "linux", Arch: "amd64"}
	m := &build.Manifest{Scan: &build.ScanRecord{Threshold: "CRITICAL", Source: "trivy", SourceVersion: "2", DBUpdatedAt: "2026-11-30T00:00:00Z"},
		Images: []*build.Image{{Service: "flagger", Digest: "sha256:index", Platforms: []build.PlatformImage{{Platform: amd64, Digest: "sha256:f1",
			CompressedSize: 17_500_000, SBOM: &build.SBOMRecord{SPDX: "sbom/flagger_linux_amd64.spdx.json", CycloneDX: "sbom/flagger_linux_amd64.cdx.json", Packages: 82},
			Vulnerabilities: &build.VulnCounts{High: 2}}}, Signature: &build.SignatureRecord{Signature: "sha256:sig", Predicates: []string{"a", "b", "c"}, Key: "k", Development: true}},
			{Service: "traefik", Platforms: []build.PlatformImage{{Platform: amd64, Digest: "sha256:t1", Vulnerabilities: &build.VulnCounts{Critical: 1, Blocking: 1}}}}}}
	lines := platformReport(m, "linux/amd64")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	for i, want := range [][]string{
		{"flagger: image linux/amd64 digest sha256:f1", "index sha256:index", "17.5 MB", "82 packages", "flagger_linux_amd64.spdx.json",
			"scan passed the CRITICAL gate (trivy 2", "2 high", "0 blocking", "signed (sha256:sig) with 3 attestations", "DEVELOPMENT key"},
		{"traefik: image linux/amd64 digest sha256:t1", "scan BLOCKED the CRITICAL gate", "1 critical", "1 blocking", "not signed"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %q does not say %q", lines[i], w)
			}
		}
	}
	// The zero options build images/platform for the nodes, reusing the
	// machine's caches; the caller's vulnerability DB is kept.
	b := platformBuildOptions(InstallOptions{Root: "/repo", Images: flow.BuildAllOptions{VulnDB: "/db", Services: []string{"x"}, Push: "r.example/x"}})
	if b.Root != "/repo" || b.Images != flow.PlatformImages || len(b.Platforms) != 1 || b.VulnDB != "/db" || b.Services != nil || b.Push != "" ||
		b.SBOMCacheDir == "" || b.StageCacheDir == "" {
		t.Errorf("platform build options %+v", b)
	}
}
