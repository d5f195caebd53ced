package overlay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func copyProd(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../infra/overlays/prod/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kustomization.yaml")
	os.WriteFile(p, raw, 0o644)
	return p
}

func pinsFor(repo string) map[string]Pin {
	pins := map[string]Pin{}
	for _, s := range []string{"ac-service", "global-controller", "meeting-controller", "media-handler"} {
		pins[s] = Pin{NewName: repo + "/" + s, Digest: digestA}
	}
	return pins
}

func TestPinImagesRewritesOnlyThePins(t *testing.T) {
	p := copyProd(t)
	before, _ := os.ReadFile(p)
	if err := PinImages(p, pinsFor("registry.example/dt")); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if strings.Count(string(after), digestA) != 4 || strings.Count(string(after), "newName: registry.example/dt/") != 4 {
		t.Fatalf("pins not applied:\n%s", after)
	}
	// Comments and everything else survive.
	for _, line := range strings.Split(string(before), "\n") {
		if strings.Contains(line, "digest:") || strings.Contains(line, "newName:") {
			continue
		}
		if !strings.Contains(string(after), strings.TrimSpace(line)) {
			t.Errorf("line lost: %q", line)
		}
	}
}

func TestPinImagesRefusesPartialOrBadPins(t *testing.T) {
	p := copyProd(t)
	before, _ := os.ReadFile(p)
	pins := pinsFor("r")
	delete(pins, "media-handler")
	if err := PinImages(p, pins); err == nil || !strings.Contains(err.Error(), "no new image for media-handler") {
		t.Errorf("missing pin: %v", err)
	}
	pins = pinsFor("r")
	pins["extra-service"] = Pin{NewName: "r/x", Digest: digestA}
	if err := PinImages(p, pins); err == nil || !strings.Contains(err.Error(), "no images: entry for extra-service") {
		t.Errorf("extra pin: %v", err)
	}
	pins = pinsFor("r")
	pins["ac-service"] = Pin{NewName: "r/ac-service", Digest: "latest"}
	if err := PinImages(p, pins); err == nil || !strings.Contains(err.Error(), "not a sha256 digest") {
		t.Errorf("bad digest: %v", err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("a refused pin changed the file")
	}
}
