package chaos

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// Where helm is missing (this project's machines), installing Litmus
// fails saying so, and the stage's callers fall back to their own executor;
// the release it would install is the one charts.yaml pins.
func TestInstallLitmusSaysWhyItCannot(t *testing.T) {
	if _, err := exec.LookPath("helm"); err == nil {
		t.Skip("helm is installed here: this test is of a machine without it")
	}
	var progress strings.Builder
	err := InstallLitmus(context.Background(), "../..", "/nonexistent/kubeconfig", &progress)
	if err == nil || !strings.Contains(err.Error(), "no helm CLI") {
		t.Fatalf("err = %v", err)
	}
	if err := InstallLitmus(context.Background(), t.TempDir(), "/nonexistent/kubeconfig", nil); err == nil || !strings.Contains(err.Error(), "charts.yaml") {
		t.Fatalf("without charts.yaml: err = %v", err)
	}
}
