package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/upstream"
)

// Where the chaos stage's inputs are, relative to the repository root.
const (
	SettingsFile = "infra/ci/chaos-tests.yaml"
	PlatformDir  = "infra/platform/chaos"
)

// StageOptions are the chaos stage's inputs: the repository's engines run
// against a kind cluster the preview runs in. Both `chaos run` and the
// pull-request check (flow.PR) run the stage through RunStage.
type StageOptions struct {
	Root     string               // repository root: settings, experiments and engines are read from it
	Cluster  *kindcluster.Cluster // its Kubeconfig must be set
	Only     []string             // engine names to run (default: every engine of the environment)
	Executor string               // ExecutorAuto (default), ExecutorDarkTower or ExecutorLitmus
	// InstallLitmus: install the litmus-core chart first (InstallLitmus);
	// when that fails the stage goes on with the executor Executor picks
	// (the pipeline's own, under auto), and the report says why.
	InstallLitmus bool
	// Duration and Interval replace every engine's TOTAL_CHAOS_DURATION and
	// CHAOS_INTERVAL (a CI/test knob; the report says so). Zero keeps them.
	Duration, Interval time.Duration
	JUnit              string // write the run as JUnit XML to this file (optional)
	Summary            string // append the run's markdown section to this file (optional)
	Progress           io.Writer
}

// ErrExperimentsFailed is wrapped by RunStage's error when the stage ran
// and an experiment did not pass (as opposed to a stage that could not run).
var ErrExperimentsFailed = errors.New("experiment(s) failed")

// RunStage loads the environment's engines, runs them (Run) and writes
// the table to Progress and the JUnit and markdown outputs. The error
// wraps ErrExperimentsFailed when an experiment did not pass; the report
// is returned whenever the experiments ran.
func RunStage(ctx context.Context, o StageOptions) (*Report, error) {
	st, err := loadStage(o.Root, o.Only)
	if err != nil {
		return nil, err
	}
	settings, defs, exps, env := st.settings, st.defs, st.exps, st.env
	enginesDir := filepath.Join(o.Root, "infra", env.Engines)
	timeout, _ := settings.Timeout()
	cfg, err := o.Cluster.RESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of cluster %s: %w", o.Cluster.Name, err)
	}
	upstream.Say(o.Progress, "chaos: %d engine(s) of infra/%s against cluster %s", len(exps), env.Engines, o.Cluster.Name)
	run := Options{Config: cfg, Experiments: exps, Definitions: defs, ChaosNamespace: settings.ChaosNamespace,
		PlatformDir: filepath.Join(o.Root, PlatformDir), EnginesDir: enginesDir, NodeExec: KindNodeExec(o.Cluster),
		Duration: o.Duration, Interval: o.Interval, ResultTimeout: timeout, Executor: o.Executor, Progress: o.Progress}
	var installFailed error
	if o.InstallLitmus {
		if installFailed = InstallLitmus(ctx, o.Root, o.Cluster.Kubeconfig, o.Progress); installFailed != nil {
			upstream.Say(o.Progress, "chaos: Litmus could not be installed: %v", installFailed)
		}
	}
	if run.Executor != ExecutorLitmus {
		if run.RunnerImage, err = LoadRunner(ctx, o.Cluster, o.Root); err != nil {
			return nil, err
		}
	}
	// The experiments run under load: the error budget and the media
	// probes read its counters from Prometheus.
	client, _, err := o.Cluster.Client()
	if err != nil {
		return nil, err
	}
	stopLoad, err := preview.StartLoad(ctx, o.Cluster, client, o.Root, st.services, o.Progress)
	if err != nil {
		return nil, err
	}
	defer stopLoad()
	start := time.Now()
	rep, err := Run(ctx, run)
	if err != nil {
		return nil, err
	}
	if installFailed != nil {
		rep.ExecutorNote += "; installing it failed: " + installFailed.Error()
	}
	if o.Progress != nil {
		rep.Table(o.Progress)
	}
	if err := writeOutputs(rep, o.JUnit, o.Summary); err != nil {
		return rep, err
	}
	if rep.Failed() {
		return rep, fmt.Errorf("chaos: %w (%s) in %s", ErrExperimentsFailed, rep.ExecutorLine(), time.Since(start).Round(time.Second))
	}
	return rep, nil
}

// UnknownEngineError: an engine was asked for by a name that is none.
type UnknownEngineError string

func (e UnknownEngineError) Error() string { return string(e) }

type stage struct {
	settings Settings
	defs     map[string]Definition
	exps     []Experiment
	env      Environment
	services string // the environment's services namespace (chaos-target)
}

// servicesNamespace reads the environment's chaos-target ConfigMap (the
// engines' kustomization renders it): where the services run.
func servicesNamespace(enginesDir string) (string, error) {
	stream, err := Render(enginesDir)
	if err != nil {
		return "", err
	}
	ns := ""
	err = eachObject(stream, "v1", "ConfigMap", func(doc []byte) error {
		var cm struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(doc, &cm); err != nil {
			return err
		}
		if cm.Metadata.Name == "chaos-target" {
			ns = cm.Data["namespace"]
		}
		return nil
	})
	if err == nil && ns == "" {
		err = fmt.Errorf("%s: no chaos-target ConfigMap naming the services' namespace (data.namespace)", enginesDir)
	}
	return ns, err
}

// StageEngines names the engines a stage with these options would run,
// in order: the check a command makes before it needs a cluster.
func StageEngines(root string, only []string) ([]string, error) {
	st, err := loadStage(root, only)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range st.exps {
		names = append(names, e.Engine)
	}
	return names, nil
}

func loadStage(root string, only []string) (*stage, error) {
	settings, err := LoadSettings(filepath.Join(root, SettingsFile))
	if err != nil {
		return nil, err
	}
	defs, err := LoadDefinitions(filepath.Join(root, PlatformDir))
	if err != nil {
		return nil, err
	}
	// One environment per cluster: the one whose overlay the preview
	// runs (today the only one).
	env := settings.Environments[0]
	exps, err := LoadEngines(filepath.Join(root, "infra", env.Engines), defs)
	if err != nil {
		return nil, err
	}
	if exps, err = pick(exps, only, "infra/"+env.Engines); err != nil {
		return nil, err
	}
	services, err := servicesNamespace(filepath.Join(root, "infra", env.Engines))
	if err != nil {
		return nil, err
	}
	return &stage{settings: settings, defs: defs, exps: exps, env: env, services: services}, nil
}

// pick keeps the engines named in only, refusing a name that is not one.
func pick(exps []Experiment, only []string, dir string) ([]Experiment, error) {
	if len(only) == 0 {
		return exps, nil
	}
	var known []string
	for _, e := range exps {
		known = append(known, e.Engine)
	}
	for _, want := range only {
		if !slices.Contains(known, want) {
			return nil, UnknownEngineError(fmt.Sprintf("--only: no engine %q in %s (engines: %s)", want, dir, strings.Join(known, ", ")))
		}
	}
	var picked []Experiment
	for _, e := range exps {
		if slices.Contains(only, e.Engine) {
			picked = append(picked, e)
		}
	}
	return picked, nil
}

// writeOutputs writes the JUnit file and appends the markdown section.
func writeOutputs(rep *Report, junit, summary string) error {
	if junit != "" {
		if err := os.MkdirAll(filepath.Dir(junit), 0o755); err != nil {
			return err
		}
		f, err := os.Create(junit)
		if err != nil {
			return err
		}
		err = rep.JUnit(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if summary != "" {
		f, err := os.OpenFile(summary, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		rep.Markdown(f)
		return f.Close()
	}
	return nil
}
