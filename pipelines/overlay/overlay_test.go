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
	edits, err := PinImages([]string{p}, pinsFor("registry.example/dt"))
	if err != nil || len(edits) != 1 || !edits[0].Changed() || strings.Join(edits[0].Services, ",") != "ac-service,global-controller,media-handler,meeting-controller" {
		t.Fatalf("%v %+v", err, edits)
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
	if _, err := PinImages([]string{p}, pins); err == nil || !strings.Contains(err.Error(), "no new image for media-handler") {
		t.Errorf("missing pin: %v", err)
	}
	pins = pinsFor("r")
	pins["extra-service"] = Pin{NewName: "r/x", Digest: digestA}
	if _, err := PinImages([]string{p}, pins); err == nil || !strings.Contains(err.Error(), "no images: entry for extra-service in "+p) {
		t.Errorf("extra pin: %v", err)
	}
	pins = pinsFor("r")
	pins["ac-service"] = Pin{NewName: "r/ac-service", Digest: "latest"}
	if _, err := PinImages([]string{p}, pins); err == nil || !strings.Contains(err.Error(), "not a sha256 digest") {
		t.Errorf("bad digest: %v", err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("a refused pin changed the file")
	}
}

// A release's images spread over kustomizations (the services' overlay,
// the flag system's platform component): each is pinned where its entry
// is; one that neither pins is refused, and nothing is written then.
func TestPinImagesAcrossKustomizations(t *testing.T) {
	prod := copyProd(t)
	raw, err := os.ReadFile("../../infra/platform/feature-flags/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flags := filepath.Join(t.TempDir(), "kustomization.yaml")
	os.WriteFile(flags, raw, 0o644)
	pins := pinsFor("r")
	pins["flag-gateway"] = Pin{NewName: "r/flag-gateway", Digest: digestA}
	if _, err := PinImages([]string{prod}, pins); err == nil || !strings.Contains(err.Error(), "no images: entry for flag-gateway") {
		t.Errorf("the services' overlay alone: %v", err)
	}
	pins["billing"] = Pin{NewName: "r/billing", Digest: digestA}
	if _, err := PinImages([]string{prod, flags}, pins); err == nil || !strings.Contains(err.Error(), "no images: entry for billing in "+prod+" or "+flags) {
		t.Errorf("an image neither pins: %v", err)
	}
	if after, _ := os.ReadFile(flags); string(after) != string(raw) {
		t.Error("a refused pin changed the flag system's kustomization")
	}
	delete(pins, "billing")
	edits, err := PinImages([]string{prod, flags}, pins)
	if err != nil || len(edits) != 2 || strings.Join(edits[1].Services, ",") != "flag-gateway" {
		t.Fatalf("%v %+v", err, edits)
	}
	if after, _ := os.ReadFile(flags); !strings.Contains(string(after), "newName: r/flag-gateway") || !strings.Contains(string(after), "digest: "+digestA) {
		t.Errorf("flag-gateway not pinned:\n%s", after)
	}
	// Pinned again to the same digests: no change.
	if edits, err = PinImages([]string{prod, flags}, pins); err != nil || edits[0].Changed() || edits[1].Changed() {
		t.Errorf("re-pinning changed something: %v", err)
	}
}
