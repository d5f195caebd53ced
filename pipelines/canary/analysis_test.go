package canary

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/validate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// previewCanaries renders the preview's canary overlay: the Canaries and
// MetricTemplates a partitioned rollout reads on the cluster.
func previewCanaries(t *testing.T) (canaries, templates map[string]*unstructured.Unstructured) {
	t.Helper()
	objs, err := validate.Render(filepath.Join("..", "..", "infra", Overlay))
	if err != nil {
		t.Fatal(err)
	}
	canaries, templates = map[string]*unstructured.Unstructured{}, map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		switch o.GetKind() {
		case "Canary":
			canaries[o.GetName()] = o
		case "MetricTemplate":
			templates[o.GetName()] = o
		}
	}
	return canaries, templates
}

// ac-service's rollout runs global-controller's analysis: read from the
// Canary as Flagger would, and its queries pointed at the StatefulSet's
// pods, the release's ordinals against the others.
func TestAnalysisOfACanaryForAStatefulSet(t *testing.T) {
	canaries, templates := previewCanaries(t)
	gc := canaries["global-controller"]
	if gc == nil {
		t.Fatal("no global-controller Canary in the preview overlay")
	}
	a, refs, err := parseAnalysis(gc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Interval != 10*time.Second || a.Threshold != 2 || a.Deadline != 600*time.Second {
		t.Errorf("interval %s, threshold %d, deadline %s; want the Canary's 10s, 2, 600s", a.Interval, a.Threshold, a.Deadline)
	}
	var hooks []string
	for _, h := range a.Webhooks {
		hooks = append(hooks, h.Type+" "+h.URL+" "+h.Timeout.String())
	}
	if want := "pre-rollout http://darktower-canary-load.preview.svc:8080/v1/load/start 5s|rollout http://darktower-canary-load.preview.svc:8080/v1/load/gate 5s"; strings.Join(hooks, "|") != want {
		t.Errorf("webhooks %q, want %q", strings.Join(hooks, "|"), want)
	}
	if len(a.Metrics) != 3 {
		t.Fatalf("%d metrics, want 3", len(a.Metrics))
	}
	pods := Pods{Canary: statefulPods("ac-service", 1, 2), Baseline: statefulPods("ac-service", 0, 1)}
	for i := range a.Metrics {
		m := &a.Metrics[i]
		_, name, _ := strings.Cut(refs[i], "/")
		mt := templates[name]
		if mt == nil {
			t.Fatalf("metric %s: no MetricTemplate %s", m.Name, name)
		}
		if err := m.fromTemplate(mt); err != nil {
			t.Fatal(err)
		}
		q, err := m.Render("preview", "ac-service", pods)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(q, "{{") || strings.Contains(q, "-primary") || strings.Contains(q, "[a-z0-9]") {
			t.Errorf("%s: rendered query still selects Deployment pods or holds template text:\n%s", m.Name, q)
		}
		if !strings.Contains(q, `pod=~"ac-service-(1)"`) || !strings.Contains(q, `namespace="preview"`) || !strings.Contains(q, "[20s]") {
			t.Errorf("%s: the release's pod, the namespace or the window is missing:\n%s", m.Name, q)
		}
		if m.Name != "request-volume" && !strings.Contains(q, `pod=~"ac-service-(0)"`) {
			t.Errorf("%s: a ratio with no baseline pods:\n%s", m.Name, q)
		}
		if serviceNS, svc, port, err := serviceOf(m.Address, "preview"); err != nil || serviceNS+"/"+svc+":"+port != "monitoring/prometheus:9090" {
			t.Errorf("%s: Prometheus at %q read as %s/%s:%s (%v)", m.Name, m.Address, serviceNS, svc, port, err)
		}
	}
	if got := statefulPods("ac-service", 1, 4); got != "ac-service-(1|2|3)" {
		t.Errorf("pods 1..3: %q", got)
	}

	// A template that selects the canary some other way is refused, not
	// run against the wrong pods.
	other := Metric{Name: "x", Template: "preview/x", Interval: "20s", Query: `sum(rate(http_requests_total{app="{{ target }}"}[{{ interval }}]))`}
	if _, err := other.Render("preview", "ac-service", pods); err == nil || !strings.Contains(err.Error(), "does not select the canary's pods") {
		t.Errorf("a query with no canary pod selector: %v", err)
	}
	// Validate refuses, before anything is released, what Check could not
	// run: a template function the pipeline has no value for, an address
	// that is not a Service.
	withVars := *a
	withVars.Metrics = append([]Metric{{Name: "v", Template: "preview/v", Interval: "20s", Address: "http://prometheus.monitoring:9090",
		Query: `sum(rate(x{pod=~"{{ target }}-[a-z0-9]+-[a-z0-9]+", le="{{ variables.le }}"}[{{ interval }}]))`}}, a.Metrics...)
	if err := withVars.Validate("preview", "ac-service", pods); err == nil || !strings.Contains(err.Error(), "variables") {
		t.Errorf("a template using variables: %v", err)
	}
	if err := a.Validate("preview", "ac-service", pods); err != nil {
		t.Errorf("global-controller's analysis for ac-service: %v", err)
	}
}

// The judgement is Flagger's: no series and NaN fail, a value past a
// bound fails, a value at it passes.
func TestAnalysisJudgesAsFlagger(t *testing.T) {
	one, max := 1.0, 1.5
	m := Metric{Name: "error-rate-vs-baseline", Max: &max}
	vol := Metric{Name: "request-volume", Min: &one}
	sample := func(v float64) []deploy.Sample { return []deploy.Sample{{Value: v}} }
	for _, c := range []struct {
		m       Metric
		samples []deploy.Sample
		pass    bool
		why     string
	}{
		{m, nil, false, "no values found"},
		{m, sample(math.NaN()), false, "NaN"},
		{m, sample(2.0), false, "2.00 > 1.5"},
		{m, sample(1.5), true, "1.50 ok"},
		{m, sample(0), true, "0.00 ok"},
		{m, append(sample(1), sample(1)...), false, "2 series, want one"},
		{vol, sample(0.5), false, "0.50 < 1"},
		{vol, sample(1), true, "1.00 ok"},
	} {
		r := c.m.judge(c.samples)
		if r.Passed != c.pass || r.Why != c.why {
			t.Errorf("%s on %v: passed %v (%s), want %v (%s)", c.m.Name, c.samples, r.Passed, r.Why, c.pass, c.why)
		}
	}
}

func TestAnalysisRefusesWhatItCannotRun(t *testing.T) {
	canary := func(analysis map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "c", "namespace": "ns"},
			"spec": map[string]any{"analysis": analysis}}}
	}
	for _, c := range []struct {
		analysis map[string]any
		want     string
	}{
		{nil, "spec.analysis: missing"},
		{map[string]any{"interval": "soon"}, "spec.analysis.interval"},
		{map[string]any{"interval": "10s"}, "an analysis without a metric judges nothing"},
		{map[string]any{"interval": "10s", "metrics": []any{map[string]any{"name": "request-success-rate", "thresholdRange": map[string]any{"min": 99}}}}, "no templateRef"},
		{map[string]any{"interval": "10s", "metrics": []any{map[string]any{"name": "m", "templateRef": map[string]any{"name": "t"}}}}, "could not fail"},
		{map[string]any{"interval": "10s", "metrics": []any{map[string]any{"name": "m", "templateRef": map[string]any{"name": "t"}, "thresholdRange": map[string]any{"max": 1}}},
			"webhooks": []any{map[string]any{"name": "approve", "type": "confirm-promotion", "url": "http://gate.ns:8080/"}}}, `"confirm-promotion": the pipeline runs pre-rollout, rollout and post-rollout hooks only`},
	} {
		if _, _, err := parseAnalysis(canary(c.analysis)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.analysis, err, c.want)
		}
	}
}

// A partition step is done when every pod at or above it runs the update
// revision and all pods serve; a pod being deleted does not serve.
func TestPartitionDone(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "ac-service"},
		Status: appsv1.StatefulSetStatus{CurrentRevision: "old", UpdateRevision: "new"}}
	pod := func(ord int, rev string, ready, deleting bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ac-service-%d", ord), Labels: map[string]string{appsv1.ControllerRevisionHashLabelKey: rev}}}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		if deleting {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}
		return p
	}
	for _, c := range []struct {
		name             string
		pods             []corev1.Pod
		partition        int32
		done, newServing bool
	}{
		{"release pod not yet created", []corev1.Pod{pod(0, "old", true, false)}, 1, false, false},
		{"release pod starting", []corev1.Pod{pod(0, "old", true, false), pod(1, "new", false, false)}, 1, false, false},
		{"release pod serving", []corev1.Pod{pod(0, "old", true, false), pod(1, "new", true, false)}, 1, true, true},
		{"old pod still above the partition", []corev1.Pod{pod(0, "old", true, false), pod(1, "old", true, false)}, 1, false, false},
		{"release pod being deleted", []corev1.Pod{pod(0, "old", true, false), pod(1, "new", true, true)}, 1, false, false},
		{"promotion half way", []corev1.Pod{pod(0, "old", true, false), pod(1, "new", true, false)}, 0, false, true},
		{"promoted", []corev1.Pod{pod(0, "new", true, false), pod(1, "new", true, false)}, 0, true, true},
		{"a pod not of the set", []corev1.Pod{pod(0, "old", true, false), pod(1, "new", true, false), {ObjectMeta: metav1.ObjectMeta{Name: "ac-service-x"}}}, 1, true, true},
	} {
		done, serving := partitionDone(sts, c.pods, c.partition, 2)
		if done != c.done || serving != c.newServing {
			t.Errorf("%s: done %v, release serving %v; want %v, %v", c.name, done, serving, c.done, c.newServing)
		}
	}
	// Once every pod runs one revision (after promotion or a rollback)
	// none is "the release serving": the regression's clock stops.
	sts.Status.UpdateRevision = "old"
	if _, serving := partitionDone(sts, []corev1.Pod{pod(0, "old", true, false), pod(1, "old", true, false)}, 1, 2); serving {
		t.Error("one revision everywhere, yet a release pod is counted as serving")
	}
}
