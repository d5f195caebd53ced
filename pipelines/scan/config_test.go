package scan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The repository's own file is valid and says CRITICAL (ADR-0012 §7).
func TestRepositoryGateConfig(t *testing.T) {
	c, err := LoadGateConfig(filepath.Join("..", "..", ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.Threshold != "CRITICAL" || c.Exceptions != ExceptionsFile {
		t.Errorf("%+v", c)
	}
}

func TestGateConfigDrivesOrRefuses(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "image-scan.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const ok = "severity: [HIGH, CRITICAL]\nexit-code: 3\nscan:\n  scanners: [vuln]\nvulnerability:\n  type: [os, library]\n  ignore-unfixed: false\nignorefile: accepted.yaml\n"
	c, err := LoadGateConfig(write(ok))
	if err != nil || c.Threshold != "HIGH" || c.Exceptions != "accepted.yaml" {
		t.Fatalf("%+v, %v", c, err)
	}
	if c, err := LoadGateConfig(filepath.Join(t.TempDir(), "none.yaml")); err != nil || c.Threshold != DefaultThreshold || !strings.Contains(c.Source, "built-in") {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	_, err = LoadGateConfig(write("severity: [HIGH]\nexit-code: 1\nscan:\n  scanners: [vuln, secret]\nvulnerability:\n  type: [os]\n  ignore-unfixed: true\n"))
	for _, want := range []string{"must also list CRITICAL", "exit-code 1", "scan.scanners", "vulnerability.type", "ignore-unfixed", "ignorefile"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q named, got %v", want, err)
		}
	}
	if _, err := LoadGateConfig(write(ok + "timeout: 10m\n")); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("an unhonoured key was accepted: %v", err)
	}
}
