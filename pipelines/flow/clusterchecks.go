package flow

import (
	"context"
	"errors"
	"path/filepath"
	"slices"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/chaos"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/upstream"
)

// ChaosJUnitFile is where the PR check writes the chaos stage's JUnit XML,
// under the output directory.
const ChaosJUnitFile = "chaos/junit.xml"

// clusterChecks are the PR check's stages after build-all (ADR-0012 §8):
// "cluster + deploy" (the build in the pull request's preview cluster,
// smoke-checked) and "chaos" (the repository's engines against it). A
// stage whose input failed is recorded as skipped, naming why; the
// cluster is deleted afterwards unless Keep.
func clusterChecks(ctx context.Context, o PROptions, built *build.Manifest, res *CIResult, run func(string, func() error)) {
	cc := *o.Cluster
	skip := func(name, why string) {
		res.Checks = append(res.Checks, Check{Name: name, Skipped: true, Error: why})
	}
	if built == nil {
		skip("cluster + deploy", "build-all failed")
		skip("chaos", "build-all failed")
		return
	}
	if cc.Commit == "" {
		cc.Commit = built.Revision
	}
	var c *kindcluster.Cluster
	existed := false
	run("cluster + deploy", func() error {
		if cc.PR <= 0 {
			return errors.New("the cluster checks need the pull request's number (ci --pr N): its cluster is pr-N")
		}
		name := preview.Name(cc.PR)
		names, err := kindcluster.List(ctx)
		if err != nil {
			return err
		}
		// A preview that was up before is updated and left up: the check
		// deletes only what it made.
		existed = slices.Contains(names, name)
		// Set before Up, so that a cluster whose deploy fails is deleted too.
		c = &kindcluster.Cluster{Name: name, Kubeconfig: kindcluster.KubeconfigPath(cc.StateDir, name)}
		_, _, err = preview.Up(ctx, preview.Options{PR: cc.PR, Commit: cc.Commit, Root: o.Root, Dist: o.Out,
			NodeImage: cc.NodeImage, StateDir: cc.StateDir, CacheDir: cc.CacheDir, Progress: o.Progress})
		return err
	})
	defer func() {
		if c == nil {
			return
		}
		if cc.Keep || existed {
			upstream.Say(o.Progress, "ci: cluster %s left up (it was there before, or --keep-cluster; preview down --pr %d deletes it)", c.Name, cc.PR)
			return
		}
		if err := preview.Down(context.WithoutCancel(ctx), cc.PR, cc.StateDir, o.Progress); err != nil {
			upstream.Say(o.Progress, "ci: deleting cluster %s: %v", c.Name, err)
		}
	}()
	if !res.Checks[len(res.Checks)-1].Passed {
		skip("chaos", "cluster + deploy failed")
		return
	}
	run("chaos", func() error {
		var err error
		res.Chaos, err = chaos.RunStage(ctx, chaos.StageOptions{Root: o.Root, Cluster: c, Only: cc.Only, Executor: cc.Executor, InstallLitmus: cc.InstallLitmus,
			Duration: cc.Duration, Interval: cc.Interval, JUnit: filepath.Join(o.Out, ChaosJUnitFile),
			Summary: filepath.Join(o.Out, build.SummaryFile), Progress: o.Progress})
		return err
	})
}
