package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		{[]string{"build-all", "--no-such-flag"}, 2, "", "flag provided but not defined"},
		{[]string{"build-all", "--services", "nope", "--base", "skeleton"}, 1, "", `unknown service "nope"`},
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

// TestREADMEAirGappedBuildAll runs the README's air-gapped main job through
// the CLI, on this repository (one platform, to keep it quick).
func TestREADMEAirGappedBuildAll(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"build-all", "--base", "skeleton", "--platforms", "linux/amd64", "--out", out, "--cache-dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, svc := range []string{"ac-service", "global-controller", "meeting-controller", "media-handler"} {
		if !strings.Contains(stdout.String(), "build: "+svc) {
			t.Errorf("no progress line for %s in:\n%s", svc, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "build-all: 4 image(s)") {
		t.Errorf("no final line in:\n%s", stdout.String())
	}
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
