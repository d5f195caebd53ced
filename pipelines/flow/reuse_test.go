package flow

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/sign"
)

// Nothing changed: nothing is redone — SBOMs, findings, signatures and
// attestations all reused (the layout's signature artifacts are the same
// bytes). Each changed input redoes exactly what depends on it: a new
// vulnerability DB scans (and attests) again without cataloging; a new
// exception judges again without scanning, and re-signs nothing whose
// content did not change; another key signs again and reuses the scan.
func TestUnchangedBuildReusesFindingsAndSignatures(t *testing.T) {
	root := fixtureRepo(t)
	var progress bytes.Buffer
	opts := BuildAllOptions{Root: root, Services: []string{"ok"}, Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton,
		Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, SBOMCacheDir: t.TempDir(), StageCacheDir: t.TempDir(),
		Progress: &progress}
	type run struct {
		said      string
		sig, att  string
		sbomReuse bool
		scanReuse bool
		signReuse bool
	}
	buildOnce := func(what string) run {
		t.Helper()
		progress.Reset()
		m, err := BuildAll(context.Background(), opts)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, progress.String())
		}
		s := progress.String()
		sig := m.Images[0].Signature
		return run{said: s, sig: sig.Signature, att: sig.Attestations,
			sbomReuse: strings.Contains(s, "sbom: reused for ok linux/amd64"),
			scanReuse: strings.Contains(s, "scan: findings reused for ok linux/amd64"),
			signReuse: strings.Contains(s, "signature and 3 attestations reused") && strings.Contains(s, "1 signature(s) and attestations reused")}
	}
	first := buildOnce("first build")
	if first.sbomReuse || first.scanReuse || first.signReuse {
		t.Fatalf("first build reused something:\n%s", first.said)
	}
	second := buildOnce("unchanged")
	if !second.sbomReuse || !second.scanReuse || !second.signReuse || second.sig != first.sig || second.att != first.att {
		t.Fatalf("unchanged: want everything reused and the same signature (%s) and attestations (%s), got %s, %s:\n%s",
			first.sig, first.att, second.sig, second.att, second.said)
	}

	// A new DB: scanned and attested again, not cataloged.
	newDB := t.TempDir()
	if err := vulndbtest.Write(newDB, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	opts.VulnDB = newDB
	r := buildOnce("new DB")
	if !r.sbomReuse || r.scanReuse || r.signReuse || r.att == first.att {
		t.Errorf("a new DB: want the SBOM reused, the scan and the attestations redone:\n%s", r.said)
	}
	opts.VulnDB = testDB

	// A new exception: judged again from the reused findings; nothing it
	// judges differently, so the signed content and signature are reused.
	exFile := filepath.Join(root, "exceptions.yaml")
	tomorrow := time.Now().AddDate(0, 0, 1).Format(time.DateOnly)
	if err := os.WriteFile(exFile, []byte("vulnerabilities:\n  - id: CVE-2099-0999\n    reason: fixture\n    expires: "+tomorrow+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Exceptions = exFile
	r = buildOnce("new exception")
	if !r.sbomReuse || !r.scanReuse || !strings.Contains(r.said, "every image judged now") || !r.signReuse || r.sig != first.sig {
		t.Errorf("a new exception: want the findings reused and judged again, the signature reused:\n%s", r.said)
	}

	// Another key: signed again; the scan's findings reused.
	other, err := sign.DevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts.DevKeyDir = filepath.Dir(other.Source)
	r = buildOnce("another key")
	if !r.sbomReuse || !r.scanReuse || r.signReuse || r.sig == first.sig || r.att == first.att {
		t.Errorf("another key: want signed again with the scan reused:\n%s", r.said)
	}

	// Without a cache directory: nothing reused beyond the SBOMs.
	opts.StageCacheDir = ""
	r = buildOnce("no stage cache")
	if r.scanReuse || r.signReuse {
		t.Errorf("--stage-cache-dir \"\": reused anyway:\n%s", r.said)
	}
}
