package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// The Litmus path: where Litmus is installed, the engines are Litmus's to
// run. This path has never run from this repository: Litmus's images cannot
// be pulled on the machine it was written on. ParseChaosResult is tested on
// a document of the CRD's documented shape.

var (
	engineGVR = schema.GroupVersionResource{Group: "litmuschaos.io", Version: "v1alpha1", Resource: "chaosengines"}
	resultGVR = schema.GroupVersionResource{Group: "litmuschaos.io", Version: "v1alpha1", Resource: "chaosresults"}
)

// ChaosResult is what the executor reads of a Litmus 3.x ChaosResult
// (chaos-operator api/litmuschaos/v1alpha1 chaosresult_types.go).
type ChaosResult struct {
	Status struct {
		ExperimentStatus struct {
			Phase    string `json:"phase"`   // Running, Completed, Stopped, ...
			Verdict  string `json:"verdict"` // Awaited, Pass, Fail, Stopped, Error
			FailStep string `json:"failStep"`
		} `json:"experimentStatus"`
		ProbeStatuses []struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			Mode   string `json:"mode"`
			Status struct {
				Verdict     string `json:"verdict"` // Passed, Failed, N/A, Awaited
				Description string `json:"description"`
			} `json:"status"`
		} `json:"probeStatuses"`
	} `json:"status"`
}

// ParseChaosResult reads a ChaosResult (JSON or YAML); done is false while
// Litmus has not decided (verdict Awaited or empty).
func ParseChaosResult(doc []byte) (verdict, reason string, probes []ProbeResult, done bool, err error) {
	var r ChaosResult
	if err := yaml.Unmarshal(doc, &r); err != nil {
		return "", "", nil, false, fmt.Errorf("ChaosResult: %w", err)
	}
	st := r.Status.ExperimentStatus
	for _, p := range r.Status.ProbeStatuses {
		probes = append(probes, ProbeResult{Name: p.Name, Type: p.Type, Mode: Mode(p.Mode), Verdict: Verdict(p.Status.Verdict), Detail: p.Status.Description})
	}
	switch st.Verdict {
	case "", "Awaited":
		return "", "", probes, false, nil
	case "Pass":
		for _, p := range probes {
			if p.Verdict != Passed {
				return VerdictFail, fmt.Sprintf("Litmus's verdict is Pass but probe %s is %s: %s", p.Name, p.Verdict, p.Detail), probes, true, nil
			}
		}
		return VerdictPass, "Litmus: Pass, every probe Passed", probes, true, nil
	default: // Fail, Stopped, Error
		var failed []string
		for _, p := range probes {
			if p.Verdict != Passed {
				failed = append(failed, fmt.Sprintf("probe %s %s: %s", p.Name, p.Verdict, p.Detail))
			}
		}
		reason = fmt.Sprintf("Litmus: %s (phase %s, failStep %s)", st.Verdict, st.Phase, st.FailStep)
		if len(failed) > 0 {
			reason += "; " + strings.Join(failed, "; ")
		}
		return VerdictFail, reason, probes, true, nil
	}
}

func runLitmus(ctx context.Context, o Options, rep *Report) error {
	client, dyn, err := connect(ctx, o, true)
	if err != nil {
		return err
	}
	if o.EnginesDir == "" {
		return fmt.Errorf("chaos run (Litmus): no engines kustomization to apply (Options.EnginesDir)")
	}
	stream, err := Render(o.EnginesDir)
	if err != nil {
		return err
	}
	engines := map[string]*unstructured.Unstructured{}
	objs, err := cluster.ParseObjects(cluster.SplitYAML(stream))
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if obj.GetKind() == "ChaosEngine" {
			engines[obj.GetName()] = obj
		}
	}
	timeout := o.ResultTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	for _, exp := range o.Experiments {
		start := time.Now()
		res := ExperimentResult{Engine: exp.Engine, Fault: exp.Fault, Executor: ExecutorLitmus,
			Target: fmt.Sprintf("%s %s/%s", exp.Target.Kind, exp.Target.Namespace, exp.Target.Label)}
		res.Verdict, res.Reason, res.Probes = litmusOne(ctx, o, client, dyn, engines[exp.Engine], exp, timeout)
		res.Injected = res.Verdict == VerdictPass
		res.Duration = time.Since(start)
		fmt.Fprintf(o.Progress, "%s: %s (%s)\n", exp.Engine, res.Verdict, res.Reason)
		rep.Experiments = append(rep.Experiments, res)
	}
	return nil
}

// litmusOne applies one engine (the old ChaosResult removed first, so a
// stale verdict is never read), waits for its verdict and deletes it.
func litmusOne(ctx context.Context, o Options, client *cluster.Client, dyn dynamic.Interface, engine *unstructured.Unstructured, exp Experiment, timeout time.Duration) (string, string, []ProbeResult) {
	if engine == nil {
		return VerdictError, fmt.Sprintf("no ChaosEngine %s in %s", exp.Engine, o.EnginesDir), nil
	}
	engine = engine.DeepCopy()
	if o.Duration > 0 || o.Interval > 0 {
		setEngineEnv(engine, withTiming(exp, o.Duration, o.Interval).Env)
	}
	ns := exp.Namespace
	results := dyn.Resource(resultGVR).Namespace(ns)
	if err := results.Delete(ctx, exp.Result(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return VerdictError, "removing the previous ChaosResult: " + err.Error(), nil
	}
	for _, r := range client.Apply(ctx, []*unstructured.Unstructured{engine}, false) {
		if r.Err != nil {
			return VerdictError, "applying the engine: " + r.Err.Error(), nil
		}
	}
	defer dyn.Resource(engineGVR).Namespace(ns).Delete(context.Background(), exp.Engine, metav1.DeleteOptions{})
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if obj, err := results.Get(ctx, exp.Result(), metav1.GetOptions{}); err == nil {
			raw, _ := json.Marshal(obj.Object)
			verdict, reason, probes, done, err := ParseChaosResult(raw)
			if err != nil {
				return VerdictError, err.Error(), nil
			}
			if done {
				return verdict, reason, probes
			}
		}
		select {
		case <-ctx.Done():
			return VerdictError, "cancelled", nil
		case <-time.After(5 * time.Second):
		}
	}
	return VerdictFail, fmt.Sprintf("no verdict in ChaosResult %s/%s within %s (resultTimeout)", ns, exp.Result(), timeout), nil
}

// setEngineEnv writes env's duration and interval into the engine's first
// experiment (the Duration/Interval knob on the Litmus path).
func setEngineEnv(engine *unstructured.Unstructured, env map[string]string) {
	exps, _, _ := unstructured.NestedSlice(engine.Object, "spec", "experiments")
	if len(exps) == 0 {
		return
	}
	x := exps[0].(map[string]any)
	list, _, _ := unstructured.NestedSlice(x, "spec", "components", "env")
	for _, name := range []string{"TOTAL_CHAOS_DURATION", "CHAOS_INTERVAL"} {
		if env[name] == "" {
			continue
		}
		found := false
		for _, e := range list {
			if m := e.(map[string]any); m["name"] == name {
				m["value"], found = env[name], true
			}
		}
		if !found {
			list = append(list, map[string]any{"name": name, "value": env[name]})
		}
	}
	unstructured.SetNestedSlice(x, list, "spec", "components", "env")
	exps[0] = x
	unstructured.SetNestedSlice(engine.Object, exps, "spec", "experiments")
}
