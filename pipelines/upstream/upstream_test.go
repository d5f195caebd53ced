package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStagingModulesAreReadFromKubernetesGoMod(t *testing.T) {
	gomod := filepath.Join(t.TempDir(), "go.mod")
	os.WriteFile(gomod, []byte("module k8s.io/kubernetes\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)\n\nreplace example.com/x => example.com/y v1.0.0\n"), 0o644)
	mods, err := StagingModules(gomod)
	if err != nil || strings.Join(mods, ",") != "k8s.io/api,k8s.io/client-go" {
		t.Fatalf("%v %v", mods, err)
	}
}

// Both places Kubernetes components read their version from are stamped,
// with the release's major and minor split out as its release build does.
func TestVersionLDFlagsStampBothVersionPackages(t *testing.T) {
	flags := VersionLDFlags("v1.34.4", time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=v1.34.4",
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=34",
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.34.4",
		"-X k8s.io/client-go/pkg/version.buildDate=2026-02-10T12:00:00Z",
	} {
		if !strings.Contains(flags, want) {
			t.Errorf("missing %q in %s", want, flags)
		}
	}
}

// A second taker waits until the first releases the lock.
func TestLockExcludesASecondTaker(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		u, err := Lock(dir, "x", nil)
		if err == nil {
			u()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("the second Lock did not wait")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the second Lock was not granted after release")
	}
}
