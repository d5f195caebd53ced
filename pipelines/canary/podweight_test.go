package canary

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/validate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// media-handler's analysis is its own suspended Canary's (Flagger leaves
// it alone), its queries pointed at the canary Deployment's pods against
// the service's own; the two pod regexes never match each other's pods.
func TestMediaHandlerAnalysisForItsCanaryPods(t *testing.T) {
	canaries, templates := previewCanaries(t)
	mh := canaries["media-handler"]
	if mh == nil {
		t.Fatal("no media-handler Canary in the preview overlay")
	}
	if suspended, _, _ := unstructured.NestedBool(mh.Object, "spec", "suspend"); !suspended {
		t.Error("media-handler's Canary is not suspended: Flagger would take its Deployment over and weight only its HTTP API")
	}
	a, refs, err := parseAnalysis(mh)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Suspended || a.Target != "media-handler" {
		t.Errorf("analysis read as suspended %v, target %q", a.Suspended, a.Target)
	}
	if len(a.Webhooks) != 2 {
		t.Errorf("webhooks %v, want the load's start and gate", a.Webhooks)
	}
	pods := weightedPods("media-handler")
	var names []string
	for i := range a.Metrics {
		m := &a.Metrics[i]
		names = append(names, m.Name)
		_, name, _ := strings.Cut(refs[i], "/")
		if err := m.fromTemplate(templates[name]); err != nil {
			t.Fatalf("metric %s: %v", m.Name, err)
		}
		q, err := m.Render("preview", "media-handler", pods)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(q, "{{") || strings.Contains(q, "-primary") {
			t.Errorf("%s: rendered query still selects Flagger's primary or holds template text:\n%s", m.Name, q)
		}
		if !strings.Contains(q, `=~"media-handler-canary-[a-z0-9]+-[a-z0-9]+"`) {
			t.Errorf("%s: the canary's pods are not selected:\n%s", m.Name, q)
		}
		if m.Name != "media-volume" && !strings.Contains(q, `=~"media-handler-[a-z0-9]+-[a-z0-9]+"`) {
			t.Errorf("%s: a ratio with no baseline pods:\n%s", m.Name, q)
		}
	}
	if got := strings.Join(names, ","); got != "media-volume,media-loss-vs-baseline,forwarding-p99-vs-baseline" {
		t.Errorf("metrics %s", got)
	}
	if err := a.Validate("preview", "media-handler", pods); err != nil {
		t.Error(err)
	}
	canary, baseline := regexp.MustCompile("^(?:"+pods.Canary+")$"), regexp.MustCompile("^(?:"+pods.Baseline+")$")
	for name, isCanary := range map[string]bool{"media-handler-canary-5d8f7c9b4-x2k9q": true, "media-handler-7c9f8d6b5-abcde": false} {
		if canary.MatchString(name) != isCanary || baseline.MatchString(name) == isCanary {
			t.Errorf("pod %s: canary %v, baseline %v", name, canary.MatchString(name), baseline.MatchString(name))
		}
	}
}

// The canary Deployment is production's media-handler with the release
// applied: the Service, NetworkPolicies and PodDisruptionBudget that
// cover the service's pods cover its pods too, and neither Deployment's
// selector takes the other's pods.
func TestCanaryDeploymentIsCoveredLikeTheService(t *testing.T) {
	objs, err := validate.Render(filepath.Join("..", "..", "infra", "overlays", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	var stable *appsv1.Deployment
	var services []*corev1.Service
	var policies []*networkingv1.NetworkPolicy
	var budgets []*policyv1.PodDisruptionBudget
	decode := func(o *unstructured.Unstructured, into any) {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			if o.GetName() == "media-handler" {
				stable = &appsv1.Deployment{}
				decode(o, stable)
			}
		case "Service":
			s := &corev1.Service{}
			decode(o, s)
			services = append(services, s)
		case "NetworkPolicy":
			p := &networkingv1.NetworkPolicy{}
			decode(o, p)
			policies = append(policies, p)
		case "PodDisruptionBudget":
			b := &policyv1.PodDisruptionBudget{}
			decode(o, b)
			budgets = append(budgets, b)
		}
	}
	if stable == nil {
		t.Fatal("no media-handler Deployment in overlays/prod")
	}
	r := Release{Service: "media-handler", Name: "v2", Image: "registry.example/darktower/media-handler@sha256:" + strings.Repeat("ab", 32),
		Env: map[string]string{"DT_EXAMPLE": "1"}}
	d, err := CanaryDeployment(stable, r, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "media-handler-canary" || *d.Spec.Replicas != 1 || d.Annotations[CanaryOfAnnotation] != "media-handler" {
		t.Errorf("canary %s, %d replicas, annotations %v", d.Name, *d.Spec.Replicas, d.Annotations)
	}
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if c.Image != r.Image || env["DT_EXAMPLE"] != "1" || env["MH_ID"] != "$(POD_NAME)" || len(c.Env) != len(stable.Spec.Template.Spec.Containers[0].Env)+1 {
		t.Errorf("the release's container: image %s, env %v", c.Image, env)
	}
	if d.Spec.Template.Annotations[ReleaseAnnotation] != "v2" || d.Spec.Template.Spec.NodeSelector["darktower.io/pool"] != "media" {
		t.Errorf("pod template: annotations %v, node selector %v", d.Spec.Template.Annotations, d.Spec.Template.Spec.NodeSelector)
	}
	canaryPod, stablePod := labels.Set(d.Spec.Template.Labels), labels.Set(stable.Spec.Template.Labels)
	matches := func(s *metav1.LabelSelector, pod labels.Set) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return !sel.Empty() && sel.Matches(pod)
	}
	if matches(stable.Spec.Selector, canaryPod) || matches(d.Spec.Selector, stablePod) || !matches(d.Spec.Selector, canaryPod) {
		t.Errorf("selectors overlap: stable %v, canary %v", stable.Spec.Selector, d.Spec.Selector)
	}
	covered := 0
	for _, s := range services {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		if sel.Matches(stablePod) != sel.Matches(canaryPod) {
			t.Errorf("Service %s selects the service's pods %v and the canary's %v", s.Name, sel.Matches(stablePod), sel.Matches(canaryPod))
		}
		if sel.Matches(canaryPod) {
			covered++
		}
	}
	for _, p := range policies {
		if matches(&p.Spec.PodSelector, stablePod) != matches(&p.Spec.PodSelector, canaryPod) {
			t.Errorf("NetworkPolicy %s covers the service's pods %v and the canary's %v", p.Name, matches(&p.Spec.PodSelector, stablePod), matches(&p.Spec.PodSelector, canaryPod))
		}
		if matches(&p.Spec.PodSelector, canaryPod) {
			covered++
		}
	}
	for _, b := range budgets {
		if matches(b.Spec.Selector, stablePod) != matches(b.Spec.Selector, canaryPod) {
			t.Errorf("PodDisruptionBudget %s covers the service's pods %v and the canary's %v", b.Name, matches(b.Spec.Selector, stablePod), matches(b.Spec.Selector, canaryPod))
		}
		if matches(b.Spec.Selector, canaryPod) {
			covered++
		}
	}
	if covered < 3 {
		t.Errorf("the canary's pods are covered by %d Services, NetworkPolicies and budgets, want its Service, policy and budget at least", covered)
	}
	// A release for another Deployment, or for a Deployment whose
	// container is not named after it, is refused.
	if _, err := CanaryDeployment(stable, Release{Service: "other", Name: "x", Image: "x"}, 1); err == nil {
		t.Error("a release of another service was accepted")
	}
	renamed := stable.DeepCopy()
	renamed.Spec.Template.Spec.Containers[0].Name = "relay"
	if _, err := CanaryDeployment(renamed, Release{Service: "media-handler", Name: "x", Image: "x"}, 1); err == nil || !strings.Contains(err.Error(), "no container named media-handler") {
		t.Errorf("a Deployment without a container named after it: %v", err)
	}
}

// What RollDeployment refuses before it touches the cluster (no client
// here): no analysis, and steps that do not grow.
func TestRollDeploymentRefusesBadInput(t *testing.T) {
	a := &Analysis{From: "preview/media-handler", Suspended: true, Target: "media-handler"}
	for _, c := range []struct {
		o    RollOptions
		want string
	}{
		{RollOptions{Release: Release{Service: "media-handler", Image: "x"}}, "no analysis"},
		{RollOptions{Release: Release{Service: "media-handler", Image: "x"}, Analysis: a, Steps: []int32{0}}, "steps [0]"},
		{RollOptions{Release: Release{Service: "media-handler", Image: "x"}, Analysis: a, Steps: []int32{2, 1}}, "each above the one before"},
		// Flagger's own Canary (not suspended), or another Deployment's.
		{RollOptions{Release: Release{Service: "media-handler", Image: "x"}, Analysis: &Analysis{From: "preview/media-handler", Target: "media-handler"}}, "is not a suspended Canary of media-handler"},
		{RollOptions{Release: Release{Service: "global-controller", Image: "x"}, Analysis: a}, "is not a suspended Canary of global-controller"},
	} {
		if _, err := RollDeployment(t.Context(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o.Steps, err, c.want)
		}
	}
}
