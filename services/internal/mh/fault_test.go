package mh

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The canaryfault media knob exists only in a test build: media-handler
// built without tags carries not even the names of its variables, and the
// same service built with -tags canaryfault reads them. Runs in either
// build (it builds its own binaries):
//
//	go test ./internal/mh -run TestMediaFaultKnobOnlyInCanaryfaultBuilds
func TestMediaFaultKnobOnlyInCanaryfaultBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds media-handler twice")
	}
	dir := t.TempDir()
	for _, c := range []struct {
		tags string
		want bool
	}{{"", false}, {"canaryfault", true}} {
		bin := filepath.Join(dir, "media-handler-"+c.tags)
		args := []string{"build", "-o", bin}
		if c.tags != "" {
			args = append(args, "-tags", c.tags)
		}
		cmd := exec.Command("go", append(args, "github.com/darktower/delivery/services/cmd/media-handler")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"DT_FAULT_", "DT_FAULT_MEDIA_DROP_RATIO", "DT_FAULT_MEDIA_DELAY"} {
			if got := bytes.Contains(b, []byte(s)); got != c.want {
				t.Errorf("media-handler built with tags %q: contains %q = %v, want %v", c.tags, s, got, c.want)
			}
		}
	}
}
