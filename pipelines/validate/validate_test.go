package validate

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/internal/simtest"
	"github.com/darktower/delivery/pipelines/sim"
)

var (
	client *cluster.Client
	crds   [][]byte
)

func TestMain(m *testing.M) {
	simtest.Main(m, func(s *sim.State) {
		cfg, err := s.RESTConfig()
		if err == nil {
			client, err = cluster.New(cfg)
		}
		if err == nil {
			crds, err = sim.LoadCRDs(context.Background(), sim.DefaultCacheDir(), sim.PlatformCRDs)
		}
		if err != nil {
			panic(err)
		}
	})
}

func TestEveryOverlayIsAcceptedAndRunsOnTheServer(t *testing.T) {
	var progress strings.Builder
	start := time.Now()
	rep, err := Server(context.Background(), Options{Infra: "../../infra", Client: client, CRDs: crds, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(progress.String())
	for _, f := range rep.Findings {
		t.Error(f)
	}
	for _, n := range rep.NotReady {
		t.Error(n)
	}
	if rep.Applied < 40 {
		t.Errorf("only %d objects applied", rep.Applied)
	}
	// Only the kinds whose CRDs no reachable source publishes here go
	// unchecked: CloudNativePG's and LitmusChaos's.
	for kind, n := range rep.Unchecked {
		if !strings.HasPrefix(kind, "postgresql.cnpg.io/") && !strings.HasPrefix(kind, "litmuschaos.io/") {
			t.Errorf("%d object(s) of %s were not checked server-side", n, kind)
		}
	}
	if len(rep.Unchecked) == 0 {
		t.Error("no unchecked kinds reported: if the CNPG and Litmus CRDs are installed now, drop this check")
	}
	t.Logf("FIGURE validate --server of %d overlays and %d platform components (%d objects) in %s", len(Overlays), len(PlatformComponents), rep.Applied, time.Since(start).Round(100*time.Millisecond))
}

// copyInfra copies infra/ to a temporary directory for one mutation.
func copyInfra(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "infra")
	if out, err := exec.Command("cp", "-r", "../../infra", dst).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return dst
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	os.WriteFile(path, []byte(strings.Replace(string(raw), old, new, 1)), 0o644)
}

// A platform object with a field its CRD's schema does not have is
// refused by the server, named.
func TestBrokenPlatformObjectIsRefused(t *testing.T) {
	infra := copyInfra(t)
	edit(t, filepath.Join(infra, "platform/observability/alerts.yaml"), "spec:\n  groups:", "spec:\n  group:")
	rep, err := Server(context.Background(), Options{Infra: infra, Overlays: []string{}, Platform: []string{"platform/observability"}, Client: client, CRDs: crds})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Object != "PrometheusRule monitoring/dark-tower-thresholds" || !strings.Contains(rep.Findings[0].Reason, "group") {
		t.Fatalf("want the PrometheusRule refused for its unknown field, got %v", rep.Findings)
	}
	t.Logf("refused: %s", rep.Findings[0])
}

// Each broken prod overlay is refused, naming the object and the reason.
func TestBrokenOverlaysAreRefusedWithObjectAndReason(t *testing.T) {
	for name, c := range map[string]struct {
		file, old, new string
		object, reason string
	}{
		"wrong field name": {"services/global-controller/deployment.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimt: 5",
			"Deployment dark-tower/global-controller", "revisionHistoryLimt"},
		"tag instead of digest": {"overlays/prod/kustomization.yaml",
			"    digest: sha256:634a4c6d6676154996d9bf423792edc1777af5f9d47f7fbb2389cc59319d3297", "    newTag: 0.1.0",
			"Deployment dark-tower/meeting-controller", "pinned by digest"},
		"pod violating restricted": {"services/media-handler/deployment.yaml", "            allowPrivilegeEscalation: false", "            allowPrivilegeEscalation: true",
			"Deployment dark-tower/media-handler", "allowPrivilegeEscalation"},
	} {
		t.Run(name, func(t *testing.T) {
			infra := copyInfra(t)
			edit(t, filepath.Join(infra, c.file), c.old, c.new)
			rep, err := Server(context.Background(), Options{Infra: infra, Overlays: []string{"overlays/prod"}, Platform: []string{}, Client: client, CRDs: crds})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Findings) != 1 {
				t.Fatalf("want exactly one finding, got %v", rep.Findings)
			}
			f := rep.Findings[0]
			if f.Object != c.object || !strings.Contains(f.Reason, c.reason) {
				t.Fatalf("finding %q, want %s refused for %q", f, c.object, c.reason)
			}
			t.Logf("refused: %s", f)
		})
	}
}
