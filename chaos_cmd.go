package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/darktower/delivery/pipelines/chaos"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// runChaos is `chaos run`: the chaos stage (ADR-0012 §8) against a
// cluster the preview runs in. The engines are the repository's
// (infra/ci/chaos-tests.yaml names them); Litmus runs them where it is
// installed, the pipeline's own executor (pipelines/chaos) elsewhere.
func runChaos(fs *pflag.FlagSet) action {
	kubeconfig := fs.String("kubeconfig", "", "the cluster to break (a kind cluster: its nodes are found by name)")
	name := fs.String("cluster", "", "a kind cluster made by `cluster up` or `preview up` (e.g. pr-42)")
	state := fs.String("state-dir", kindcluster.DefaultStateDir(), "where each cluster's kubeconfig is kept")
	only := fs.String("only", "", "comma-separated engines to run (default: every engine of the environment)")
	junit := fs.String("junit", "", "write the run as JUnit XML to this file")
	summary := fs.String("summary", "", "append the run's markdown section to this file (the CI summary.md)")
	executor := fs.String("executor", chaos.ExecutorAuto, "darktower or litmus (default: Litmus where its CRDs are installed, else darktower)")
	installLitmus := fs.Bool("install-litmus", false, "install the litmus-core chart (infra/platform/charts.yaml, helm CLI) first; where it cannot be, the pipeline's executor judges, and says why")
	duration := fs.Duration("duration", 0, "test/CI knob: replace every engine's TOTAL_CHAOS_DURATION (e.g. 20s); the report says so")
	interval := fs.Duration("interval", 0, "test/CI knob: replace every engine's CHAOS_INTERVAL (e.g. 10s)")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if (*kubeconfig == "") == (*name == "") {
			return usageError{"chaos run needs exactly one of --cluster NAME (a kind cluster, e.g. pr-42) or --kubeconfig FILE"}
		}
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		var picked []string
		if *only != "" {
			picked = csv(*only)
		}
		// The engines are checked before any cluster is needed.
		if _, err := chaos.StageEngines(root, picked); err != nil {
			if unknown := new(chaos.UnknownEngineError); errors.As(err, unknown) {
				return usageError{unknown.Error()}
			}
			return err
		}
		var c *kindcluster.Cluster
		if *name != "" {
			c = &kindcluster.Cluster{Name: *name, Kubeconfig: kindcluster.KubeconfigPath(*state, *name)}
			if _, err := os.Stat(c.Kubeconfig); err != nil {
				if err := kindcluster.ExportKubeconfig(*name, c.Kubeconfig); err != nil {
					return fmt.Errorf("no kubeconfig for cluster %s (is it up? cluster list shows the clusters): %w", *name, err)
				}
			}
		} else {
			cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubeconfig %s: %w", *kubeconfig, err)
			}
			// The faults act in the nodes, so find the kind cluster these
			// nodes are.
			if c, err = kindClusterOf(ctx, cfg); err != nil {
				return err
			}
			c.Kubeconfig = *kubeconfig
		}
		_, err = chaos.RunStage(ctx, chaos.StageOptions{Root: root, Cluster: c, Only: picked, Executor: *executor, InstallLitmus: *installLitmus,
			Duration: *duration, Interval: *interval, JUnit: *junit, Summary: *summary, Progress: stdout})
		return err
	}
}

// kindClusterOf finds the kind cluster whose nodes are the cluster's.
func kindClusterOf(ctx context.Context, cfg *rest.Config) (*kindcluster.Cluster, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the cluster's nodes: %w", err)
	}
	if len(nodes.Items) == 0 {
		return nil, errors.New("the cluster has no nodes")
	}
	names, err := kindcluster.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		c := &kindcluster.Cluster{Name: n}
		kn, err := c.Nodes()
		if err != nil {
			continue
		}
		for _, k := range kn {
			if k.String() == nodes.Items[0].Name {
				return c, nil
			}
		}
	}
	return nil, fmt.Errorf("node %s is not a node of any kind cluster on this Docker engine: chaos run acts through the nodes' container runtime, which it reaches for kind clusters only (use --cluster NAME)", nodes.Items[0].Name)
}
