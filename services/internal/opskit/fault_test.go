package opskit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The canaryfault knob exists only in a test build: a service built
// without tags carries not even the names of its variables, and the same
// service built with -tags canaryfault reads them. Runs in either build
// (it builds its own binaries):
//
//	go test ./internal/opskit -run TestFaultKnobOnlyInCanaryfaultBuilds
func TestFaultKnobOnlyInCanaryfaultBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a service twice")
	}
	dir := t.TempDir()
	for _, c := range []struct {
		tags string
		want bool
	}{{"", false}, {"canaryfault", true}} {
		bin := filepath.Join(dir, "global-controller-"+c.tags)
		args := []string{"build", "-o", bin}
		if c.tags != "" {
			args = append(args, "-tags", c.tags)
		}
		cmd := exec.Command("go", append(args, "github.com/darktower/delivery/services/cmd/global-controller")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"DT_FAULT_", "DT_FAULT_5XX_RATIO", "DT_FAULT_DELAY"} {
			if got := bytes.Contains(b, []byte(s)); got != c.want {
				t.Errorf("global-controller built with tags %q: contains %q = %v, want %v", c.tags, s, got, c.want)
			}
		}
	}
}
