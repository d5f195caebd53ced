package policy

import (
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	flaggerv1beta1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// flaggerRewrite is the prod overlay as Flagger leaves it at a canary's
// first traffic step: policy/flaggersim runs Flagger's own controllers
// (its own module: they do not build against this module's k8s.io/api)
// over the overlay's Deployments, Services and HPAs and infra/ci's
// Canaries, and hands back every Deployment, Service, HPA and HTTPRoute.
func flaggerRewrite(t *testing.T, prod, ci *Rendered) (*Rendered, []*gatewayv1.HTTPRoute) {
	t.Helper()
	var in bytes.Buffer
	for _, o := range append(slices.Clone(prod.Objects), ci.Objects...) {
		switch o.APIVersion + "/" + o.Kind {
		case "apps/v1/Deployment", "v1/Service", "autoscaling/v2/HorizontalPodAutoscaler", "flagger.app/v1beta1/Canary":
			in.Write(o.YAML)
			in.WriteString("---\n")
		}
	}
	cmd := exec.Command("go", "run", ".")
	cmd.Dir = "flaggersim"
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("flaggersim: %v\n%s", err, stderr.String())
	}
	var objs []Object
	var routes []*gatewayv1.HTTPRoute
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var meta struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind == "HTTPRoute" {
			r := &gatewayv1.HTTPRoute{}
			if err := yaml.UnmarshalStrict([]byte(doc), r); err != nil {
				t.Fatalf("HTTPRoute %s: %v", meta.Metadata.Name, err)
			}
			routes = append(routes, r)
			continue
		}
		objs = append(objs, Object{APIVersion: meta.APIVersion, Kind: meta.Kind, Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name, YAML: []byte(doc)})
	}
	typed, structural, err := DecodeAll(objs)
	if err != nil {
		t.Fatal(err)
	}
	return &Rendered{Objects: objs, Typed: typed, Structural: structural}, routes
}

func selects(t *testing.T, s *metav1.LabelSelector, pod map[string]string) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return !sel.Empty() && sel.Matches(labels.Set(pod))
}

func serviceSelects(s *corev1.Service, pod map[string]string) bool {
	return len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod))
}

// TestFlaggerRewriteKeepsPoliciesScrapesAndPorts judges the objects after
// Flagger's rewrite: Flagger runs the primary as <target>-primary with its
// pods' app.kubernetes.io/name renamed to <name>-primary, and rewrites the
// selector and ports of the Services it manages. Everything that applied
// to a service's pods before must apply to its primary and canary pods
// alike: NetworkPolicies (their own and every cross-service rule), PDBs,
// the ServiceMonitor (each pod scraped exactly once), and the Services'
// ports, TCP 443, UDP 443 and 8080, which must stay on a Service reaching
// both, with TCP 443 split between them by Flagger's HTTPRoute.
func TestFlaggerRewriteKeepsPoliciesScrapesAndPorts(t *testing.T) {
	prod := decoded(t, "overlays/prod")
	ci := decoded(t, "ci")
	after, routes := flaggerRewrite(t, prod, ci)
	n, ns := network(t, "../infra/overlays/prod")
	_, others, _ := probePeers(t, ns)

	type pods struct{ canary, primary Peer }
	sides := map[string]pods{}
	canaries := All[*flaggerv1beta1.Canary](ci)
	for _, c := range canaries {
		if c.Spec.Suspend {
			// Flagger's advanceCanary returns for a suspended Canary before
			// it touches anything (flaggersim mirrors it): its releases are
			// the pipeline's (`canary roll`), beside the service's own
			// pods, whose policies the overlay's tests already judge.
			flaggerLeftAlone(t, c, prod, after, routes)
			continue
		}
		var target, primary *appsv1.Deployment
		for _, d := range All[*appsv1.Deployment](after) {
			if o := metav1.GetControllerOf(d); o != nil && o.Kind == flaggerv1beta1.CanaryKind && o.Name == c.Name {
				primary = d
			} else if d.Name == c.Spec.TargetRef.Name {
				target = d
			}
		}
		if target == nil || primary == nil {
			t.Fatalf("canary %s: after Flagger, target %v primary %v", c.Name, target != nil, primary != nil)
		}
		if target.Spec.Template.Labels["app.kubernetes.io/name"] == primary.Spec.Template.Labels["app.kubernetes.io/name"] {
			t.Fatalf("canary %s: Flagger did not rename the primary's pods' label; this test would show nothing", c.Name)
		}
		sides[c.Spec.TargetRef.Name] = pods{
			canary:  Peer{Name: c.Spec.TargetRef.Name + " (canary)", Namespace: ns, Labels: target.Spec.Template.Labels},
			primary: Peer{Name: c.Spec.TargetRef.Name + " (primary)", Namespace: ns, Labels: primary.Spec.Template.Labels},
		}
	}
	var peers []Peer
	for _, w := range prod.Workloads() {
		if s, ok := sides[w.Name]; ok {
			peers = append(peers, s.canary, s.primary)
		} else {
			peers = append(peers, Peer{Name: w.Name, Namespace: ns, Labels: w.Template.Labels})
		}
	}
	peers = append(peers, others...)

	for _, c := range canaries {
		name := c.Spec.TargetRef.Name
		s, ok := sides[name]
		if !ok {
			continue // suspended: nothing of Flagger's to judge
		}
		t.Run(name, func(t *testing.T) {
			// NetworkPolicies: whoever the canary may talk to or hear from,
			// on any port, so may the primary, and the other way round.
			for _, p := range peers {
				for _, port := range matrixPorts {
					for _, dir := range []string{"to", "from"} {
						var okCanary, okPrimary bool
						var err1, err2 error
						if dir == "to" {
							okCanary, err1 = n.Allows(p, s.canary, port)
							okPrimary, err2 = n.Allows(p, s.primary, port)
						} else {
							okCanary, err1 = n.Allows(s.canary, p, port)
							okPrimary, err2 = n.Allows(s.primary, p, port)
						}
						if err1 != nil || err2 != nil {
							t.Fatal(err1, err2)
						}
						if okCanary != okPrimary {
							t.Errorf("NetworkPolicies: %s %s %s: canary %v, primary %v", port, dir, p.Name, okCanary, okPrimary)
						}
					}
				}
			}

			// PDBs: the same budgets cover both, and there is one.
			var forCanary, forPrimary []string
			for _, d := range All[*policyv1.PodDisruptionBudget](prod) {
				if selects(t, d.Spec.Selector, s.canary.Labels) {
					forCanary = append(forCanary, d.Name)
				}
				if selects(t, d.Spec.Selector, s.primary.Labels) {
					forPrimary = append(forPrimary, d.Name)
				}
			}
			if len(forCanary) == 0 || !slices.Equal(forCanary, forPrimary) {
				t.Errorf("PodDisruptionBudgets: canary pods under %v, primary pods under %v", forCanary, forPrimary)
			}

			// ServiceMonitors: each pod is one scrape target, through a
			// Service (as it is after Flagger) that has the endpoint's port.
			scrapes := map[string][]string{}
			for _, sm := range All[*monitoringv1.ServiceMonitor](prod) {
				for _, svc := range All[*corev1.Service](after) {
					if svc.Namespace != sm.Namespace || !selects(t, &sm.Spec.Selector, svc.Labels) {
						continue
					}
					for _, ep := range sm.Spec.Endpoints {
						if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
							continue
						}
						for side, pod := range map[string]Peer{"canary": s.canary, "primary": s.primary} {
							if serviceSelects(svc, pod.Labels) {
								scrapes[side] = append(scrapes[side], fmt.Sprintf("%s via Service %s port %s", sm.Name, svc.Name, ep.Port))
							}
						}
					}
				}
			}
			for _, side := range []string{"canary", "primary"} {
				if len(scrapes[side]) != 1 {
					t.Errorf("ServiceMonitors: the %s pods are scraped %d times (%v), want once", side, len(scrapes[side]), scrapes[side])
				}
			}

			// Ports: every port the service's own Services offered its pods
			// is still offered, by the same Service, to primary and canary
			// pods alike; this includes TCP 443, UDP 443 and 8080.
			afterSvc := map[string]*corev1.Service{}
			for _, svc := range All[*corev1.Service](after) {
				afterSvc[svc.Name] = svc
				seen := map[string]bool{}
				for _, p := range svc.Spec.Ports {
					key := fmt.Sprintf("%s/%d", p.Protocol, p.Port)
					if seen[key] {
						t.Errorf("Service %s: %s twice (the API server refuses it)", svc.Name, key)
					}
					seen[key] = true
				}
			}
			offered := map[Port]bool{}
			for _, svc := range All[*corev1.Service](prod) {
				if !serviceSelects(svc, s.canary.Labels) {
					continue
				}
				now := afterSvc[svc.Name]
				for _, p := range svc.Spec.Ports {
					if now == nil || !slices.ContainsFunc(now.Spec.Ports, func(q corev1.ServicePort) bool {
						return q.Name == p.Name && q.Protocol == p.Protocol && q.Port == p.Port && q.TargetPort == p.TargetPort
					}) {
						t.Errorf("Service %s: port %s %s/%d is gone after Flagger", svc.Name, p.Name, p.Protocol, p.Port)
						continue
					}
					if !serviceSelects(now, s.canary.Labels) || !serviceSelects(now, s.primary.Labels) {
						t.Errorf("Service %s (port %s) after Flagger: selects canary pods %v, primary pods %v; want both",
							svc.Name, p.Name, serviceSelects(now, s.canary.Labels), serviceSelects(now, s.primary.Labels))
						continue
					}
					offered[Port{p.Protocol, p.Port}] = true
				}
			}
			// Every port the pods serve (TCP 443, UDP 443 where they serve
			// it, the ops port 8080) is among them.
			for _, d := range All[*appsv1.Deployment](prod) {
				if d.Name != name {
					continue
				}
				for _, ctr := range d.Spec.Template.Spec.Containers {
					for _, cp := range ctr.Ports {
						if p := (Port{cp.Protocol, cp.ContainerPort}); !offered[p] {
							t.Errorf("container port %s (%s) is not offered to both primary and canary pods by a Service", p, cp.Name)
						}
					}
				}
			}

			// The HTTPRoute: TCP 443 to the service's own Service is split
			// between a Service of the primary pods and one of the canary
			// pods, at the first step's weights.
			var route *gatewayv1.HTTPRoute
			for _, r := range routes {
				for _, pr := range r.Spec.ParentRefs {
					if string(pr.Name) == name && pr.Kind != nil && *pr.Kind == "Service" && pr.Port != nil && *pr.Port == 443 {
						route = r
					}
				}
			}
			if route == nil {
				t.Fatalf("no HTTPRoute has Service %s port 443 as its parent", name)
			}
			weights := map[string]int32{}
			for _, rule := range route.Spec.Rules {
				for _, b := range rule.BackendRefs {
					svc := afterSvc[string(b.Name)]
					if svc == nil || b.Weight == nil {
						t.Fatalf("HTTPRoute %s: backend %s is no Service, or has no weight", route.Name, b.Name)
					}
					switch c, p := serviceSelects(svc, s.canary.Labels), serviceSelects(svc, s.primary.Labels); {
					case c && !p:
						weights["canary"] += *b.Weight
					case p && !c:
						weights["primary"] += *b.Weight
					default:
						t.Errorf("HTTPRoute %s: backend %s selects canary pods %v, primary pods %v; want one side", route.Name, b.Name, c, p)
					}
				}
			}
			first := int32(c.Spec.Analysis.StepWeights[0])
			if weights["canary"] != first || weights["primary"] != 100-first {
				t.Errorf("HTTPRoute %s weights %v, want canary %d, primary %d", route.Name, weights, first, 100-first)
			}
		})
	}
}

// flaggerLeftAlone holds a suspended Canary's objects to what Flagger does
// with them, nothing: no primary Deployment or HPA, no Services or
// HTTPRoute of its own, and the target and the Services reaching its pods
// as the overlay has them (not scaled to zero, not re-selected).
func flaggerLeftAlone(t *testing.T, c *flaggerv1beta1.Canary, prod, after *Rendered, routes []*gatewayv1.HTTPRoute) {
	t.Helper()
	name := c.Spec.TargetRef.Name
	for _, d := range All[*appsv1.Deployment](after) {
		if o := metav1.GetControllerOf(d); (o != nil && o.Kind == flaggerv1beta1.CanaryKind && o.Name == c.Name) || d.Name == name+"-primary" {
			t.Errorf("suspended canary %s: Flagger made Deployment %s; it leaves a suspended Canary alone", c.Name, d.Name)
		}
	}
	for _, h := range All[*autoscalingv2.HorizontalPodAutoscaler](after) {
		if h.Name == name+"-primary" {
			t.Errorf("suspended canary %s: Flagger made HorizontalPodAutoscaler %s", c.Name, h.Name)
		}
	}
	for _, r := range routes {
		for _, pr := range r.Spec.ParentRefs {
			if string(pr.Name) == name || string(pr.Name) == c.Spec.Service.Name {
				t.Errorf("suspended canary %s: Flagger routed Service %s by HTTPRoute %s", c.Name, pr.Name, r.Name)
			}
		}
	}
	before := map[string]*corev1.Service{}
	for _, svc := range All[*corev1.Service](prod) {
		before[svc.Name] = svc
	}
	for _, svc := range All[*corev1.Service](after) {
		was := before[svc.Name]
		switch {
		case was == nil && (svc.Name == c.Spec.Service.Name || strings.HasPrefix(svc.Name, c.Spec.Service.Name+"-")):
			t.Errorf("suspended canary %s: Flagger made Service %s", c.Name, svc.Name)
		case was != nil && serviceSelects(was, prodTemplateLabels(prod, name)) &&
			(!apiequality.Semantic.DeepEqual(was.Spec.Selector, svc.Spec.Selector) || !apiequality.Semantic.DeepEqual(was.Spec.Ports, svc.Spec.Ports)):
			t.Errorf("suspended canary %s: Flagger rewrote Service %s (selector %v → %v, ports %v → %v)", c.Name, svc.Name,
				was.Spec.Selector, svc.Spec.Selector, was.Spec.Ports, svc.Spec.Ports)
		}
	}
	for _, d := range All[*appsv1.Deployment](prod) {
		if d.Name != name {
			continue
		}
		found := false
		for _, now := range All[*appsv1.Deployment](after) {
			if now.Name == name {
				found = true
				if !apiequality.Semantic.DeepEqual(d.Spec, now.Spec) {
					t.Errorf("suspended canary %s: Flagger changed Deployment %s's spec (replicas %v → %v)", c.Name, name, d.Spec.Replicas, now.Spec.Replicas)
				}
			}
		}
		if !found {
			t.Errorf("suspended canary %s: Deployment %s is gone after Flagger", c.Name, name)
		}
	}
}

// prodTemplateLabels is the pod template labels of the overlay's Deployment name.
func prodTemplateLabels(prod *Rendered, name string) map[string]string {
	for _, d := range All[*appsv1.Deployment](prod) {
		if d.Name == name {
			return d.Spec.Template.Labels
		}
	}
	return nil
}
