package platform

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRepositoryChartsLoad(t *testing.T) {
	charts, err := LoadCharts("../../infra/platform/charts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(TSV(charts)), "\n")
	if len(lines) != len(charts) || len(strings.Split(lines[0], "\t")) != 6 {
		t.Fatalf("TSV:\n%s", TSV(charts))
	}
}

func TestUnpinnedOrIncompleteChartsAreRefused(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ body, want string }{
		"range":   {"charts:\n- {name: a, repo: https://x, chart: a, version: ^1.2.0, namespace: n, values: v.yaml}\n", "not an exact version"},
		"missing": {"charts:\n- {name: a, chart: a, version: 1.2.0, namespace: n, values: v.yaml}\n", "all required"},
		"typo":    {"charts:\n- {name: a, repo: https://x, chart: a, versoin: 1.2.0, namespace: n, values: v.yaml}\n", "versoin"},
	} {
		p := filepath.Join(dir, name+".yaml")
		os.WriteFile(p, []byte(c.body), 0o644)
		if _, err := LoadCharts(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
