package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Experiment is one experiment of one ChaosEngine, as Litmus 3.x will run
// it: the engine's namespace (where every pod of the run lives and the
// ChaosResult <engine>-<fault> appears), the fault, the target, the env the
// experiment pod gets, and the probes that decide the verdict.
type Experiment struct {
	Engine         string // ChaosEngine name
	Namespace      string // the engine's namespace (chaos-runner's CHAOS_NAMESPACE)
	ServiceAccount string // spec.chaosServiceAccount
	Fault          string // spec.experiments[].name: the ChaosExperiment it runs
	Target         Target
	// Env is what the experiment pod gets for the fault's tunables: the
	// ChaosExperiment's defaults overridden by the engine's env, the order
	// chaos-runner applies them (pkg/utils/environment.go SetENV). Without
	// definitions (LoadEngines with nil), the engine's env alone.
	Env    map[string]string
	Probes []Probe
}

// Target is spec.appinfo.
type Target struct {
	Namespace string // appns
	Label     string // applabel, "key=value"
	Kind      string // appkind: deployment, statefulset, ...
}

// Result is the name of the ChaosResult Litmus writes for this experiment.
func (e Experiment) Result() string { return e.Engine + "-" + e.Fault }

// Seconds reads an env value given in seconds (TOTAL_CHAOS_DURATION,
// CHAOS_INTERVAL, RAMP_TIME); ok is false when unset or empty.
func (e Experiment) Seconds(name string) (d time.Duration, ok bool, err error) {
	v := e.Env[name]
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, true, fmt.Errorf("%s %s: %s=%q is not a number of seconds", e.Engine, e.Fault, name, v)
	}
	return time.Duration(n) * time.Second, true, nil
}

// Duration is TOTAL_CHAOS_DURATION.
func (e Experiment) Duration() (time.Duration, error) {
	d, _, err := e.Seconds("TOTAL_CHAOS_DURATION")
	return d, err
}

// Interval is CHAOS_INTERVAL (pod-delete, container-kill: time between
// rounds).
func (e Experiment) Interval() (time.Duration, error) {
	d, _, err := e.Seconds("CHAOS_INTERVAL")
	return d, err
}

// Force is FORCE (pod-delete: delete with grace period 0).
func (e Experiment) Force() (bool, error) {
	v := e.Env["FORCE"]
	if v == "" {
		return false, nil
	}
	return strconv.ParseBool(v)
}

// PodsAffectedPercent is PODS_AFFECTED_PERC; Litmus treats empty or 0 as
// one pod.
func (e Experiment) PodsAffectedPercent() (int, error) {
	v := e.Env["PODS_AFFECTED_PERC"]
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 100 {
		return 0, fmt.Errorf("%s %s: PODS_AFFECTED_PERC=%q is not a percentage", e.Engine, e.Fault, v)
	}
	return n, nil
}

// Definition is a ChaosExperiment: its image and default env.
type Definition struct {
	Name   string
	Image  string
	Env    map[string]string
	Labels map[string]string
}

// The YAML forms, as far as this package reads them (the policy module
// checks the whole schema).
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

type envVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type engineYAML struct {
	object
	Spec struct {
		ChaosServiceAccount string `json:"chaosServiceAccount"`
		EngineState         string `json:"engineState"`
		Appinfo             struct {
			Appns    string `json:"appns"`
			Applabel string `json:"applabel"`
			Appkind  string `json:"appkind"`
		} `json:"appinfo"`
		Experiments []struct {
			Name string `json:"name"`
			Spec struct {
				Components struct {
					Env []envVar `json:"env"`
				} `json:"components"`
				Probe []probeYAML `json:"probe"`
			} `json:"spec"`
		} `json:"experiments"`
	} `json:"spec"`
}

type experimentYAML struct {
	object
	Spec struct {
		Definition struct {
			Image  string            `json:"image"`
			Env    []envVar          `json:"env"`
			Labels map[string]string `json:"labels"`
		} `json:"definition"`
	} `json:"spec"`
}

const group = "litmuschaos.io/v1alpha1"

// Render builds a kustomization directory (as `kustomize build`) into one
// YAML stream.
func Render(dir string) ([]byte, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return rm.AsYaml()
}

// LoadEngines renders dir (an environment's chaos kustomization, e.g.
// infra/overlays/preview/chaos) and parses its ChaosEngines; defs, when
// not nil, are the ChaosExperiments they run (LoadDefinitions), whose env
// the engines' env overrides.
func LoadEngines(dir string, defs map[string]Definition) ([]Experiment, error) {
	stream, err := Render(dir)
	if err != nil {
		return nil, err
	}
	return ParseEngines(stream, defs)
}

// LoadDefinitions renders dir (infra/platform/chaos) and returns its
// ChaosExperiments by name.
func LoadDefinitions(dir string) (map[string]Definition, error) {
	stream, err := Render(dir)
	if err != nil {
		return nil, err
	}
	return ParseDefinitions(stream)
}

// ParseDefinitions reads the ChaosExperiments of a YAML stream.
func ParseDefinitions(stream []byte) (map[string]Definition, error) {
	defs := map[string]Definition{}
	err := eachDoc(stream, "ChaosExperiment", func(doc []byte) error {
		var x experimentYAML
		// Definitions carry many fields this package has no use for
		// (permissions, command): not strict.
		if err := yaml.Unmarshal(doc, &x); err != nil {
			return err
		}
		if x.Metadata.Name == "" || x.Spec.Definition.Image == "" {
			return fmt.Errorf("ChaosExperiment %q: name and spec.definition.image are required", x.Metadata.Name)
		}
		defs[x.Metadata.Name] = Definition{Name: x.Metadata.Name, Image: x.Spec.Definition.Image, Env: envMap(x.Spec.Definition.Env), Labels: x.Spec.Definition.Labels}
		return nil
	})
	return defs, err
}

// ParseEngines reads the ChaosEngines of a YAML stream (other kinds are
// skipped), one Experiment per engine experiment, sorted by engine name.
func ParseEngines(stream []byte, defs map[string]Definition) ([]Experiment, error) {
	var out []Experiment
	err := eachDoc(stream, "ChaosEngine", func(doc []byte) error {
		var e engineYAML
		if err := yaml.Unmarshal(doc, &e); err != nil {
			return err
		}
		s := e.Spec
		name := e.Metadata.Name
		if name == "" || s.ChaosServiceAccount == "" || len(s.Experiments) == 0 {
			return fmt.Errorf("ChaosEngine %q: name, chaosServiceAccount and experiments are required", name)
		}
		if (s.Appinfo.Appkind == "") != (s.Appinfo.Applabel == "") {
			return fmt.Errorf("ChaosEngine %s: appkind and applabel go together (chaos-operator refuses one alone)", name)
		}
		for _, x := range s.Experiments {
			env := map[string]string{}
			if defs != nil {
				d, ok := defs[x.Name]
				if !ok {
					return fmt.Errorf("ChaosEngine %s: no ChaosExperiment %s", name, x.Name)
				}
				for k, v := range d.Env {
					env[k] = v
				}
			}
			for k, v := range envMap(x.Spec.Components.Env) {
				env[k] = v
			}
			exp := Experiment{Engine: name, Namespace: e.Metadata.Namespace, ServiceAccount: s.ChaosServiceAccount, Fault: x.Name,
				Target: Target{Namespace: s.Appinfo.Appns, Label: s.Appinfo.Applabel, Kind: s.Appinfo.Appkind}, Env: env}
			// chaos-operator: an engine without appns targets its own namespace.
			if exp.Target.Namespace == "" {
				exp.Target.Namespace = exp.Namespace
			}
			for _, p := range x.Spec.Probe {
				probe, err := p.parse()
				if err != nil {
					return fmt.Errorf("ChaosEngine %s experiment %s: %w", name, x.Name, err)
				}
				exp.Probes = append(exp.Probes, probe)
			}
			out = append(out, exp)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Engine < out[j].Engine })
	return out, err
}

func envMap(list []envVar) map[string]string {
	m := map[string]string{}
	for _, e := range list {
		m[e.Name] = e.Value
	}
	return m
}

// eachDoc calls f with every document of stream whose kind is kind (and
// whose apiVersion is Litmus's).
func eachDoc(stream []byte, kind string, f func([]byte) error) error {
	return eachObject(stream, group, kind, f)
}

// eachObject calls f with each document of the stream of apiVersion and kind.
func eachObject(stream []byte, apiVersion, kind string, f func([]byte) error) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(stream))
	for {
		var node yamlv3.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		doc, err := yamlv3.Marshal(&node)
		if err != nil {
			return err
		}
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return err
		}
		if o.Kind != kind || o.APIVersion != apiVersion {
			continue
		}
		if err := f(doc); err != nil {
			return err
		}
	}
}

// Settings is infra/ci/chaos-tests.yaml: the chaos stage's settings.
type Settings struct {
	ChaosNamespace string        `json:"chaosNamespace"`
	Environments   []Environment `json:"environments"`
	ResultTimeout  string        `json:"resultTimeout"`
	Sequential     bool          `json:"sequential"`
}

// Environment is one environment the stage runs chaos in: its overlay and
// its chaos kustomization, both relative to infra/.
type Environment struct {
	Overlay string `json:"overlay"`
	Engines string `json:"engines"`
}

// Timeout is ResultTimeout parsed.
func (s Settings) Timeout() (time.Duration, error) { return time.ParseDuration(s.ResultTimeout) }

// LoadSettings reads and checks the stage's settings file.
func LoadSettings(path string) (Settings, error) {
	var s Settings
	raw, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := yaml.UnmarshalStrict(raw, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.ChaosNamespace == "" || len(s.Environments) == 0 {
		return s, fmt.Errorf("%s: chaosNamespace and environments are required", path)
	}
	if d, err := s.Timeout(); err != nil || d <= 0 {
		return s, fmt.Errorf("%s: resultTimeout %q is not a positive duration", path, s.ResultTimeout)
	}
	return s, nil
}
