package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
		"--cache-dir", t.TempDir(), "--no-sign", "--vuln-db", db}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "scan: Trivy DB "+db) {
		t.Fatalf("build-all --vuln-db (go-vuln-db's): exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if code := run(context.Background(), []string{"go-vuln-db"}, &stdout, &stderr); code != 2 {
		t.Errorf("go-vuln-db without --out: exit %d, want 2", code)
	}
}
