package chaos

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A ChaosResult as chaos-operator 3.x writes it (chaosresult_types.go:
// status.experimentStatus, status.probeStatuses[].status.{verdict,
// description}), written here from the CRD's documented shape: Litmus
// cannot run on the machine this executor was written on.
const resultFail = `{
  "apiVersion": "litmuschaos.io/v1alpha1",
  "kind": "ChaosResult",
  "metadata": {"name": "redis-pod-delete-pod-delete", "namespace": "dark-tower-chaos"},
  "spec": {"engine": "redis-pod-delete", "experiment": "pod-delete"},
  "status": {
    "experimentStatus": {"phase": "Completed", "verdict": "Fail", "failStep": "Probe execution result didn't met the passing criteria", "probeSuccessPercentage": "50"},
    "probeStatuses": [
      {"name": "meeting-controller-ready-after", "type": "httpProbe", "mode": "EOT", "status": {"verdict": "Failed", "description": "Actual value: 503, Expected value: 200"}},
      {"name": "redis-back", "type": "k8sProbe", "mode": "EOT", "status": {"verdict": "Passed", "description": "Probe passed"}}
    ],
    "history": {"passedRuns": 0, "failedRuns": 1, "stoppedRuns": 0}
  }
}`

func TestParseChaosResult(t *testing.T) {
	verdict, reason, probes, done, err := ParseChaosResult([]byte(resultFail))
	if err != nil || !done || verdict != VerdictFail || len(probes) != 2 {
		t.Fatalf("%s %q %+v %v %v", verdict, reason, probes, done, err)
	}
	if !strings.Contains(reason, "probe meeting-controller-ready-after Failed: Actual value: 503") || strings.Contains(reason, "redis-back") {
		t.Errorf("reason %q", reason)
	}
	if probes[1].Verdict != Passed || probes[1].Mode != EOT || probes[1].Type != "k8sProbe" {
		t.Errorf("probe %+v", probes[1])
	}
	pass := strings.NewReplacer(`"verdict": "Fail"`, `"verdict": "Pass"`, `"verdict": "Failed"`, `"verdict": "Passed"`).Replace(resultFail)
	if verdict, reason, _, done, _ := ParseChaosResult([]byte(pass)); verdict != VerdictPass || !done {
		t.Errorf("all passed: %s %s", verdict, reason)
	}
	// Pass with a probe not Passed is not a pass (N/A: never judged).
	na := strings.Replace(pass, `"Passed", "description": "Probe passed"`, `"N/A", "description": "skipped"`, 1)
	if verdict, _, _, _, _ := ParseChaosResult([]byte(na)); verdict != VerdictFail {
		t.Errorf("Pass with an N/A probe: %s", verdict)
	}
	awaited := strings.Replace(resultFail, `"verdict": "Fail"`, `"verdict": "Awaited"`, 1)
	if _, _, _, done, _ := ParseChaosResult([]byte(awaited)); done {
		t.Error("Awaited taken as a verdict")
	}
}

func TestSetEngineEnv(t *testing.T) {
	e := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"experiments": []any{map[string]any{"name": "pod-delete",
		"spec": map[string]any{"components": map[string]any{"env": []any{map[string]any{"name": "TOTAL_CHAOS_DURATION", "value": "60"}}}}}}}}}
	setEngineEnv(e, map[string]string{"TOTAL_CHAOS_DURATION": "20", "CHAOS_INTERVAL": "10"})
	exps, _, _ := unstructured.NestedSlice(e.Object, "spec", "experiments")
	env, _, _ := unstructured.NestedSlice(exps[0].(map[string]any), "spec", "components", "env")
	if len(env) != 2 || env[0].(map[string]any)["value"] != "20" || env[1].(map[string]any)["value"] != "10" {
		t.Errorf("env %v", env)
	}
}

func TestCompare(t *testing.T) {
	for _, c := range []struct {
		got            int
		criteria, want string
		ok             bool
	}{{200, "==", "200", true}, {503, "==", "200", false}, {503, "!=", "200", true}, {204, "oneOf", "[200,204]", true}, {500, ">=", "500", true}, {404, "<", "400", false}} {
		if ok, err := compareInt(c.got, c.criteria, c.want); err != nil || ok != c.ok {
			t.Errorf("%d %s %s: %v %v", c.got, c.criteria, c.want, ok, err)
		}
	}
	if _, err := compareInt(200, "between", "1"); err == nil {
		t.Error("an unknown criteria was accepted")
	}
}

func TestLossRules(t *testing.T) {
	all := lossRules("eth0", 100)
	if strings.Join(all[0], " ") != "INPUT -i eth0 -j DROP" || strings.Join(all[1], " ") != "OUTPUT -o eth0 -j DROP" {
		t.Errorf("100 %%: %v", all)
	}
	half := lossRules("eth0", 50)
	if strings.Join(half[0], " ") != "INPUT -i eth0 -m statistic --mode random --probability 0.5000 -j DROP" {
		t.Errorf("50 %%: %v", half)
	}
}

func TestSupportedAndTiming(t *testing.T) {
	_, defs, exps := load(t)
	for _, e := range exps {
		for _, p := range e.Probes {
			if err := Supported(p); err != nil {
				t.Errorf("%s: the repository's probe is not runnable: %v", e.Engine, err)
			}
		}
	}
	if err := Supported(Probe{Name: "c", Type: "cmdProbe"}); err == nil || !strings.Contains(err.Error(), "not supported by the pipeline's executor") {
		t.Errorf("cmdProbe: %v", err)
	}
	redis, _ := byEngine(exps, "redis-pod-delete")
	short := withTiming(redis, 20*time.Second, 10*time.Second)
	if short.Env["TOTAL_CHAOS_DURATION"] != "20" || short.Env["CHAOS_INTERVAL"] != "10" || redis.Env["TOTAL_CHAOS_DURATION"] != "30" {
		t.Errorf("timing: %v / %v", short.Env, redis.Env)
	}
	loss, _ := byEngine(exps, "meeting-controller-network-loss")
	if _, has := withTiming(loss, 20*time.Second, 10*time.Second).Env["CHAOS_INTERVAL"]; has && loss.Env["CHAOS_INTERVAL"] == "" {
		t.Error("an interval was given to an experiment without one")
	}
	if got := overrides(loss, withTiming(loss, 20*time.Second, 10*time.Second)); got != "shortened by the run's Duration/Interval knob: TOTAL_CHAOS_DURATION=20 (engine: 60)" {
		t.Errorf("overrides: %q", got)
	}
	if got := overrides(loss, loss); got != "" {
		t.Errorf("no knob: %q", got)
	}
	if ns := steadyNamespaces(redis); strings.Join(ns, ",") != "dark-tower-data,preview" {
		t.Errorf("redis steady namespaces %v", ns)
	}
	labels := runnerLabels(defs)
	if labels["app.kubernetes.io/component"] != "experiment-job" || labels["name"] != "" {
		t.Errorf("runner labels %v", labels)
	}
}

func TestReport(t *testing.T) {
	r := &Report{Executor: ExecutorDarkTower, ExecutorNote: "Litmus is not installed in this cluster", Started: time.Unix(0, 0), Duration: time.Minute,
		Experiments: []ExperimentResult{
			{Engine: "a", Fault: "pod-delete", Verdict: VerdictPass, Probes: []ProbeResult{{Name: "p", Type: "httpProbe", Mode: Continuous, Verdict: Passed, Triggers: 3, Tries: 3}}},
			{Engine: "b", Fault: "container-kill", Verdict: VerdictFail, Reason: "probe p Failed: 503 | x"},
			{Engine: "c", Fault: "pod-delete", Verdict: VerdictError, Reason: "cmdProbe not supported"},
		}}
	if !r.Failed() {
		t.Error("not failed")
	}
	var table, md, junit bytes.Buffer
	r.Table(&table)
	r.Markdown(&md)
	if err := r.JUnit(&junit); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(table.String(), "executor: darktower (Litmus is not installed in this cluster)\n") || !strings.Contains(table.String(), "p[httpProbe Continuous]=Passed 3trig/3tries") {
		t.Errorf("table:\n%s", table.String())
	}
	if !strings.Contains(md.String(), `503 \| x`) || !strings.Contains(md.String(), "executor: darktower") {
		t.Errorf("markdown:\n%s", md.String())
	}
	var s struct {
		Suite struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(junit.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if s.Suite.Tests != 3 || s.Suite.Failures != 1 || s.Suite.Errors != 1 || s.Suite.Cases[1].Failure == nil || s.Suite.Cases[1].Failure.Message != "probe p Failed: 503 | x" {
		t.Errorf("junit %+v\n%s", s, junit.String())
	}
	r.Experiments = r.Experiments[:1]
	if r.Failed() {
		t.Error("a passing run failed")
	}
}

func TestPrefixed(t *testing.T) {
	var b bytes.Buffer
	w := &prefixed{w: &b, prefix: "chaos [executor darktower] "}
	io.WriteString(w, "one\ntw")
	io.WriteString(w, "o\nthree\n")
	if want := "chaos [executor darktower] one\nchaos [executor darktower] two\nchaos [executor darktower] three\n"; b.String() != want {
		t.Errorf("%q", b.String())
	}
}
