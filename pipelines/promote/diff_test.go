package promote

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Each change, as a patch, applied by git to the old file gives the new one.
func TestUnifiedDiffAppliesWithGit(t *testing.T) {
	var long []string
	for i := range 30 {
		long = append(long, "line "+string(rune('a'+i%26)))
	}
	base := strings.Join(long, "\n") + "\n"
	for name, c := range map[string][2]string{
		"one line changed":        {base, strings.Replace(base, "line c\n", "line C\n", 1)},
		"first and last changed":  {base, "first\n" + strings.TrimPrefix(base, "line a\n") + "last\n"},
		"two hunks":               {base, strings.Replace(strings.Replace(base, "line b\n", "B\n", 1), "line y\n", "Y\nY2\n", 1)},
		"lines added to an entry": {"images:\n  - name: x\n    digest: d\nlabels: {}\n", "images:\n  - name: x\n    digest: d\n    newName: r/x\n    digest2: e\nlabels: {}\n"},
		"everything replaced":     {"a\nb\n", "c\n"},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "f.yaml"), []byte(c[0]), 0o644)
		patch := unifiedDiff("f.yaml", c[0], c[1])
		os.WriteFile(filepath.Join(dir, "p.patch"), []byte(patch), 0o644)
		cmd := exec.Command("git", "apply", "p.patch")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: git apply: %v\n%s\n%s", name, err, out, patch)
			continue
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "f.yaml")); string(got) != c[1] {
			t.Errorf("%s: applied gives\n%s\nwant\n%s\npatch:\n%s", name, got, c[1], patch)
		}
	}
	if unifiedDiff("f", "same\n", "same\n") != "" {
		t.Error("a patch for no change")
	}
}
