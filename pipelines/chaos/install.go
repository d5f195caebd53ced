package chaos

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/darktower/delivery/internal/cmdrun"
	"github.com/darktower/delivery/pipelines/platform"
	"github.com/darktower/delivery/pipelines/upstream"
)

// LitmusChart is the release in infra/platform/charts.yaml that brings the
// chaos operator and its CRDs.
const LitmusChart = "litmus-core"

// InstallLitmus installs the litmus-core chart pinned in
// infra/platform/charts.yaml into the cluster behind kubeconfig, with its
// values, through the helm CLI, and waits for the operator. Where that is
// not possible (no helm, no route to the chart repository or to the
// images: this project's own machines) it returns why, and the caller
// runs the pipeline's own executor instead, saying so.
func InstallLitmus(ctx context.Context, root, kubeconfig string, progress io.Writer) error {
	charts, err := platform.LoadCharts(filepath.Join(root, "infra", "platform", "charts.yaml"))
	if err != nil {
		return err
	}
	var chart *platform.Chart
	for i := range charts {
		if charts[i].Name == LitmusChart {
			chart = &charts[i]
		}
	}
	if chart == nil {
		return fmt.Errorf("infra/platform/charts.yaml has no %s release", LitmusChart)
	}
	helm, err := exec.LookPath("helm")
	if err != nil {
		return fmt.Errorf("no helm CLI on this machine (%v)", err)
	}
	upstream.Say(progress, "chaos: installing Litmus (%s %s from %s) into namespace %s", chart.Chart, chart.Version, chart.Repo, chart.Namespace)
	start := time.Now()
	args := []string{"upgrade", "--install", chart.Name, chart.Chart, "--repo", chart.Repo, "--version", chart.Version,
		"--namespace", chart.Namespace, "--create-namespace", "--values", filepath.Join(root, "infra", "platform", chart.Values),
		"--kubeconfig", kubeconfig, "--wait", "--timeout", "5m"}
	if _, err := (cmdrun.Cmd{Progress: progress, TailLines: 10}).Run(ctx, helm, args...); err != nil {
		return fmt.Errorf("helm %s %s: %w", chart.Chart, chart.Version, err)
	}
	upstream.Say(progress, "chaos: Litmus installed in %s", time.Since(start).Round(time.Second))
	return nil
}
