package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/scan"
)

// go-vuln-db makes, from the Go module proxy alone, a DB build-all takes
// as --vuln-db: the air-gapped build runs with it and says which DB judged.
func TestGoVulnDBFeedsBuildAll(t *testing.T) {
	db := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"go-vuln-db", "--out", db}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "golang.org/x/vulndb@") {
		t.Fatalf("go-vuln-db: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	args := []string{"build-all", "--services", "ac-service", "--base", "skeleton", "--platforms", "linux/amd64", "--out", t.TempDir(),
		"--cache-dir", t.TempDir(), "--stage-cache-dir", t.TempDir(), "--no-sign", "--vuln-db", db}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "scan: Trivy DB "+db) {
		t.Fatalf("build-all --vuln-db (go-vuln-db's): exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if code := run(context.Background(), []string{"go-vuln-db"}, &stdout, &stderr); code != 2 {
		t.Errorf("go-vuln-db without --out: exit %d, want 2", code)
	}
}

// The main command, flags only for a throwaway repository's one service
// and an unreachable Trivy DB: the Go vulnerability database judges, and
// a reachable vulnerable symbol makes build-all exit 3 naming the advisory.
func TestBuildAllExitsBlockedOnAReachableGoVuln(t *testing.T) {
	root := t.TempDir()
	if err := vulndbtest.GoTextRepo(root); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // not a git checkout
	var stdout, stderr bytes.Buffer
	args := []string{"build-all", "--services", "calls", "--out", t.TempDir(), "--cache-dir", t.TempDir(), "--db-cache-dir", t.TempDir(),
		"--db-repository", "127.0.0.1:1/trivy-db:2", "--stage-cache-dir", t.TempDir(), "--no-sign"}
	code := run(context.Background(), args, &stdout, &stderr)
	if code != scan.ExitBlocked || !strings.Contains(stderr.String(), vulndbtest.GoTextAdvisory+" in calls") ||
		!strings.Contains(stdout.String(), "VULNERABILITY SOURCE: go-vulndb") {
		t.Fatalf("exit %d, want %d naming %s\n%s\n%s", code, scan.ExitBlocked, vulndbtest.GoTextAdvisory, stdout.String(), stderr.String())
	}
}
