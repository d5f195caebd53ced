package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/scan"
)

// The README's main command with no flags, where Trivy's DB cannot be
// downloaded (an unreachable --db-repository stands for an air gap) and
// the locked base cannot be had: the Go vulnerability database and the
// skeleton base are chosen and announced first, and the build is judged
// on reachability — the service that calls the vulnerable function is
// blocked naming the advisory, the one that only imports its package
// passes with the advisory reported unreachable.
func TestGoVulnDBSourceBlocksOnlyAReachableSymbol(t *testing.T) {
	root := t.TempDir()
	if err := vulndbtest.GoTextRepo(root); err != nil {
		t.Fatal(err)
	}
	dbCache := t.TempDir() // no Trivy DB in it
	stageCache := t.TempDir()
	run := func(service, source string) (*build.Manifest, string, error) {
		var progress bytes.Buffer
		out := filepath.Join(root, "dist-"+service)
		m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{service}, Out: out,
			VulnSource: source, DBCacheDir: dbCache, DBRepository: "127.0.0.1:1/trivy-db:2", CacheDir: t.TempDir(),
			Version: "1.0.0", Env: fixedEnv, NoSign: true, StageCacheDir: stageCache, Progress: &progress})
		t.Logf("%s:\n%s", service, progress.String())
		return m, progress.String(), err
	}

	_, progress, err := run("calls", "") // auto
	var blocked *scan.BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("calls: err = %v, want the gate's refusal", err)
	}
	for _, want := range []string{vulndbtest.GoTextAdvisory + " in calls (linux/amd64): golang.org/x/text 0.3.7 installed, fixed in 0.3.8",
		"reachable: golang.org/x/text/language.ParseAcceptLanguage", "a reachable vulnerable symbol"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("calls: the refusal does not say %q:\n%v", want, err)
		}
	}
	lines := strings.Split(progress, "\n")
	head := strings.Join(lines[:min(len(lines), 8)], "\n")
	for _, want := range []string{"VULNERABILITY SOURCE: go-vulndb", scan.GoVulnDBModule + "@" + scan.GoVulnDBVersion,
		"chosen because Trivy's DB cannot be had", "127.0.0.1:1", "NOT COVERED: the base image's OS packages"} {
		if !strings.Contains(head, want) {
			t.Errorf("the first lines do not say %q:\n%s", want, head)
		}
	}
	if !strings.Contains(progress, "BASE: skeleton (built in, no network): the locked base cannot be had") {
		t.Errorf("the base's fallback is not announced")
	}
	summary, err := os.ReadFile(filepath.Join(root, "dist-calls", build.SummaryFile))
	if err != nil || !strings.Contains(string(summary), "Judged by **go-vulndb**: "+scan.GoVulnDBModule+"@"+scan.GoVulnDBVersion) ||
		!strings.Contains(string(summary), vulndbtest.GoTextAdvisory+" in calls (linux/amd64): golang.org/x/text 0.3.7: reachable") {
		t.Errorf("calls: summary.md (%v):\n%s", err, summary)
	}
	sarifReach(t, filepath.Join(root, "dist-calls"), vulndbtest.GoTextAdvisory, scan.Reachable)

	m, progress, err := run("imports", scan.SourceGoVulnDB)
	if err != nil {
		t.Fatalf("imports: %v", err)
	}
	const linked = "linked imports with symbols (for the scan)"
	if !strings.Contains(progress, linked) {
		t.Errorf("imports: the scan's binary with symbols was not linked:\n%s", progress)
	}
	if m.Scan.Source != scan.SourceGoVulnDB || m.Scan.SourceVersion != scan.GoVulnDBModule+"@"+scan.GoVulnDBVersion || m.Images[0].Platforms[0].Vulnerabilities.Unknown == 0 {
		t.Errorf("imports: manifest %+v %+v", m.Scan, m.Images[0].Platforms[0].Vulnerabilities)
	}
	summary, _ = os.ReadFile(filepath.Join(root, "dist-imports", build.SummaryFile))
	if !strings.Contains(string(summary), vulndbtest.GoTextAdvisory+" in imports (linux/amd64): golang.org/x/text 0.3.7: unreachable") {
		t.Errorf("imports: summary.md does not report GO-2022-1059 unreachable:\n%s", summary)
	}
	sarifReach(t, filepath.Join(root, "dist-imports"), vulndbtest.GoTextAdvisory, scan.Unreachable)

	// Unchanged: the findings are reused, so nothing is linked again for
	// the scan (the warm no-op build costs one link per platform).
	if _, progress, err = run("imports", scan.SourceGoVulnDB); err != nil {
		t.Fatalf("imports again: %v", err)
	}
	if strings.Contains(progress, linked) || !strings.Contains(progress, "scan: findings reused for imports") {
		t.Errorf("imports again: want the findings reused and no link with symbols:\n%s", progress)
	}
	sarifReach(t, filepath.Join(root, "dist-imports"), vulndbtest.GoTextAdvisory, scan.Unreachable)
}

// sarifReach checks the SARIF log names the source and gives the
// finding's reachability.
func sarifReach(t *testing.T, out, id, want string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(out, scan.SARIFFile))
	if err != nil {
		t.Fatal(err)
	}
	var log struct {
		Runs []struct {
			Properties map[string]any
			Results    []struct {
				RuleID     string
				Properties map[string]any
			}
		}
	}
	if err := json.Unmarshal(raw, &log); err != nil || len(log.Runs) != 1 {
		t.Fatalf("%s: %v", scan.SARIFFile, err)
	}
	run := log.Runs[0]
	if run.Properties["source"] != scan.SourceGoVulnDB || run.Properties["sourceDate"] == "" {
		t.Errorf("SARIF run properties %v", run.Properties)
	}
	for _, r := range run.Results {
		if r.RuleID == id {
			if r.Properties["reachability"] != want {
				t.Errorf("SARIF %s: properties %v, want reachability %s", id, r.Properties, want)
			}
			return
		}
	}
	t.Errorf("SARIF has no result for %s", id)
}

// A build that publishes does not fall back: neither to the Go
// vulnerability database nor to the skeleton base (both before compiling).
func TestPublishingBuildsDoNotFallBack(t *testing.T) {
	root := t.TempDir()
	if err := vulndbtest.GoTextRepo(root); err != nil {
		t.Fatal(err)
	}
	o := BuildAllOptions{Root: root, Services: []string{"imports"}, Out: filepath.Join(root, "dist"), Push: "127.0.0.1:1/darktower",
		DBCacheDir: t.TempDir(), DBRepository: "127.0.0.1:1/trivy-db:2", CacheDir: t.TempDir(), Version: "1.0.0", Env: fixedEnv, NoSign: true}
	_, err := BuildAll(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "falls back to the Go vulnerability database only for builds that do not publish") {
		t.Errorf("vulnerability source: err = %v", err)
	}
	var progress bytes.Buffer
	o.VulnDB, o.Progress = testDB, &progress
	_, err = BuildAll(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "example.com/base:1 is not pinned") || strings.Contains(progress.String(), "BASE: skeleton") {
		t.Errorf("base: err = %v\n%s", err, progress.String())
	}
}
