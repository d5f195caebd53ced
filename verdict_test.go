package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/flow"
)

// build-all --record-verdict (what the Dagger functions build-all, scan
// and sbom run, keeping dist/ whatever the exit status) leaves the SBOMs,
// the scan reports and ci.json also when the gate blocks, and ci-verdict
// reads the verdict from them: passed, blocked naming the advisory, or
// another failure (not marked as the gate's).
func TestBuildAllRecordsItsVerdictForCIVerdict(t *testing.T) {
	db := t.TempDir()
	if err := vulndbtest.Write(db, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	args := []string{"build-all", "--record-verdict", "--services", "ac-service", "--base", "skeleton", "--platforms", "linux/amd64",
		"--out", out, "--cache-dir", t.TempDir(), "--sbom-cache-dir", t.TempDir(), "--stage-cache-dir", t.TempDir(), "--no-sign"}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append(args, "--vuln-db", db), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	r, err := flow.ReadCIResult(out)
	if err != nil || !r.Passed || len(r.Checks) != 1 || r.Checks[0].Name != "build-all" {
		t.Fatalf("passing run recorded %+v, %v", r, err)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"ci-verdict", "--out", out}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "build-all") {
		t.Fatalf("ci-verdict of a passing build: exit %d\n%s", code, stdout.String())
	}

	const module = "golang.org/x/crypto" // linked by ac-service
	var version string
	for _, d := range readSPDXPackages(t, filepath.Join(out, "sbom", "ac-service_linux_amd64.spdx.json")) {
		if d[0] == module {
			version = strings.TrimPrefix(d[1], "v")
		}
	}
	critical := t.TempDir()
	if err := vulndbtest.Write(critical, time.Now(), vulndbtest.Advisory{ID: "CVE-2099-1001", Severity: "CRITICAL", Title: "fixture",
		Package: module, Vulnerable: "<= " + version, Fixed: "99.0.0"}); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), append(args, "--vuln-db", critical), &stdout, &stderr); code != exitBlocked {
		t.Fatalf("blocked run: exit %d, want %d\n%s", code, exitBlocked, stderr.String())
	}
	for _, f := range []string{"scan/results.sarif", "sbom/ac-service_linux_amd64.cdx.json", "summary.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("a blocked build must still leave its reports: %v", err)
		}
	}
	r, err = flow.ReadCIResult(out)
	if err != nil || r.Passed || !r.Checks[0].Blocked || !strings.Contains(r.Checks[0].Error, "CVE-2099-1001") {
		t.Fatalf("blocked run recorded %+v, %v", r, err)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"ci-verdict", "--out", out}, &stdout, &stderr); code == 0 || !strings.Contains(stdout.String(), "CVE-2099-1001") {
		t.Fatalf("ci-verdict of a blocked build: exit %d\n%s", code, stdout.String())
	}

	// Not the gate: recorded as a failure that is not a block.
	if code := run(context.Background(), append(args, "--vuln-db", db, "--severity", "SEVERE"), &stdout, &stderr); code != 1 {
		t.Fatalf("bad --severity: exit %d", code)
	}
	r, err = flow.ReadCIResult(out)
	if err != nil || r.Passed || r.Checks[0].Blocked || !strings.Contains(r.Checks[0].Error, "SEVERE") {
		t.Fatalf("failed run recorded %+v, %v", r, err)
	}
}
