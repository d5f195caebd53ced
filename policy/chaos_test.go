package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The chaos run (infra/platform/chaos, infra/overlays/<env>/chaos), read
// against how Litmus 3.x runs it: chaos-runner sets CHAOS_NAMESPACE to the
// engine's namespace and the experiment's env overrides it
// (chaos-runner pkg/utils/environment.go SetENV), so no object may set it;
// every pod of a run lives in the engine's namespace; the operator wants
// appinfo's kind and label together.

// chaosRun is what one environment's chaos renders to.
type chaosRun struct {
	overlay   string
	namespace string // the services' namespace of the overlay
	engines   []*ChaosEngine
	target    *corev1.ConfigMap
}

func chaosRuns(t *testing.T) []chaosRun {
	t.Helper()
	var runs []chaosRun
	for _, overlay := range ChaosOverlays {
		run := chaosRun{overlay: overlay}
		for _, ns := range All[*corev1.Namespace](decoded(t, overlay)) {
			run.namespace = ns.Name
		}
		r := decoded(t, overlay+"/chaos")
		run.engines = All[*ChaosEngine](r)
		for _, cm := range All[*corev1.ConfigMap](r) {
			if cm.Name == "chaos-target" {
				run.target = cm
			}
		}
		if run.namespace == "" || run.target == nil || len(run.engines) == 0 {
			t.Fatalf("%s: namespace %q, chaos-target %v, %d engines", overlay, run.namespace, run.target != nil, len(run.engines))
		}
		runs = append(runs, run)
	}
	return runs
}

// Every overlay with a chaos/ directory is a ChaosOverlay and the reverse.
func TestChaosOverlaysAreExactlyThoseWithEngines(t *testing.T) {
	var dirs []string
	for _, o := range overlays {
		if _, err := os.Stat(filepath.Join(infraDir, o, "chaos", "kustomization.yaml")); err == nil {
			dirs = append(dirs, o)
		}
	}
	if !slices.Equal(dirs, ChaosOverlays) {
		t.Fatalf("overlays with chaos/: %v; policy/adr.go ChaosOverlays: %v", dirs, ChaosOverlays)
	}
}

func TestChaosEnginesAimAtTheirOverlayAndRunInTheChaosNamespace(t *testing.T) {
	for _, run := range chaosRuns(t) {
		if got := run.target.Data["namespace"]; got != run.namespace {
			t.Errorf("%s/chaos: chaos-target namespace %q, the overlay's namespace is %q", run.overlay, got, run.namespace)
		}
		for _, e := range run.engines {
			if e.Namespace != ChaosNamespace {
				t.Errorf("%s: engine %s runs in %q, want %s (its runner, experiment and helper pods run there)", run.overlay, e.Name, e.Namespace, ChaosNamespace)
			}
			if ns := e.Spec.Appinfo.Appns; ns != run.namespace && ns != "dark-tower-data" {
				t.Errorf("%s: engine %s targets namespace %q, want %s (or the data namespace)", run.overlay, e.Name, ns, run.namespace)
			}
			for _, x := range e.Spec.Experiments {
				for _, p := range x.Spec.Probe {
					if in := p.HTTPProbeInputs; in != nil && !strings.Contains(in.URL, "."+run.namespace+".svc:") {
						t.Errorf("%s: engine %s probe %s calls %s, not a service of %s", run.overlay, e.Name, p.Name, in.URL, run.namespace)
					}
				}
			}
		}
	}
}

// Each engine names an experiment defined in the chaos namespace, runs as
// its account, and every experiment has a probe (a Pass without one
// proves nothing). Nothing sets CHAOS_NAMESPACE.
func TestChaosEnginesHaveExperimentsAccountsAndProbes(t *testing.T) {
	platform := decoded(t, "platform/chaos")
	defined := map[string]*ChaosExperiment{}
	for _, x := range All[*ChaosExperiment](platform) {
		defined[x.Name] = x
		for _, env := range x.Spec.Definition.ENVList {
			if env.Name == "CHAOS_NAMESPACE" || env.Name == "APP_NAMESPACE" {
				t.Errorf("ChaosExperiment %s sets %s: chaos-runner sets it from the engine; an override sends the experiment to the wrong namespace", x.Name, env.Name)
			}
		}
		if x.Spec.Definition.Labels["app.kubernetes.io/component"] != "experiment-job" {
			t.Errorf("ChaosExperiment %s: its pods must carry app.kubernetes.io/component=experiment-job (the probes' network policies admit that)", x.Name)
		}
	}
	accounts := map[string]bool{}
	for _, sa := range All[*corev1.ServiceAccount](platform) {
		accounts[sa.Name] = true
	}
	for _, run := range chaosRuns(t) {
		for _, e := range run.engines {
			if !accounts[e.Spec.ChaosServiceAccount] {
				t.Errorf("engine %s: account %s is not in platform/chaos", e.Name, e.Spec.ChaosServiceAccount)
			}
			for _, x := range e.Spec.Experiments {
				if defined[x.Name] == nil {
					t.Errorf("engine %s: no ChaosExperiment %s in platform/chaos", e.Name, x.Name)
				}
				if len(x.Spec.Probe) == 0 {
					t.Errorf("engine %s: experiment %s has no probe", e.Name, x.Name)
				}
				for _, env := range x.Spec.Components.ENV {
					if env.Name == "CHAOS_NAMESPACE" || env.Name == "APP_NAMESPACE" {
						t.Errorf("engine %s sets %s", e.Name, env.Name)
					}
				}
			}
		}
	}
}

// The faults the issue asks for are all there: pod-delete of each
// service, a container kill, a pod's network cut, a dependency outage.
func TestChaosCoversTheFaultsWanted(t *testing.T) {
	for _, run := range chaosRuns(t) {
		got := map[string]bool{}
		for _, e := range run.engines {
			for _, x := range e.Spec.Experiments {
				got[x.Name+" "+e.Spec.Appinfo.Applabel] = true
				got[x.Name] = true
			}
		}
		var want []string
		for _, s := range Services {
			want = append(want, "pod-delete app.kubernetes.io/name="+s)
		}
		want = append(want, "container-kill", "pod-network-loss", "pod-delete app.kubernetes.io/name=redis-cluster")
		for _, w := range want {
			if !got[w] {
				t.Errorf("%s: no engine runs %s", run.overlay, w)
			}
		}
	}
}

// The services' readiness probes in the engines are the ADR's readiness
// probe: its path and port, its timeout, its period as the interval, and
// its failure threshold as Litmus's retry (the number of tries in all).
func TestChaosReadinessProbesAreTheADRs(t *testing.T) {
	for _, run := range chaosRuns(t) {
		for _, e := range run.engines {
			for _, x := range e.Spec.Experiments {
				for _, p := range x.Spec.Probe {
					if p.Type != "httpProbe" {
						continue
					}
					rp := p.RunProperties
					want := fmt.Sprintf(":%d%s", Readiness.Port, Readiness.Path)
					if !strings.HasSuffix(p.HTTPProbeInputs.URL, want) || p.HTTPProbeInputs.Method.Get == nil || p.HTTPProbeInputs.Method.Get.ResponseCode != "200" {
						t.Errorf("engine %s probe %s: want GET …%s == 200", e.Name, p.Name, want)
					}
					if rp.ProbeTimeout != fmt.Sprintf("%ds", Readiness.Timeout) || rp.Interval != fmt.Sprintf("%ds", Readiness.Period) || rp.Retry != int(Readiness.FailureThreshold) || rp.Attempt != 0 {
						t.Errorf("engine %s probe %s: runProperties %+v, want ADR readiness: timeout %ds, interval %ds, retry %d", e.Name, p.Name, rp, Readiness.Timeout, Readiness.Period, Readiness.FailureThreshold)
					}
				}
			}
		}
	}
}

// The chaos namespace's Pod Security is what Litmus's helpers need and
// the services' stays restricted; the account's rights are Roles only.
func TestChaosNamespaceAndRights(t *testing.T) {
	platform := decoded(t, "platform/chaos")
	nss := All[*corev1.Namespace](platform)
	if len(nss) != 1 || nss[0].Name != ChaosNamespace || nss[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Fatalf("platform/chaos must hold the %s namespace, Pod Security privileged (helpers: privileged, hostPID, hostPath)", ChaosNamespace)
	}
	if len(All[*rbacv1.ClusterRole](platform)) > 0 || len(All[*rbacv1.ClusterRoleBinding](platform)) > 0 {
		t.Error("the chaos account gets Roles, never cluster-wide rights")
	}
	// Over its targets: read pods and owners, delete pods; nothing else.
	allowed := map[string][]string{"/pods": {"get", "list", "delete"}, "apps/deployments": {"get", "list"}, "apps/statefulsets": {"get", "list"}, "apps/replicasets": {"get", "list"}}
	for _, dir := range append(append([]string{}, ChaosOverlays...), "platform/database") {
		r := decoded(t, dir)
		bound := false
		for _, rb := range All[*rbacv1.RoleBinding](r) {
			for _, s := range rb.Subjects {
				if s.Namespace == ChaosNamespace {
					bound = true
					if rb.RoleRef.Kind != "Role" {
						t.Errorf("%s: RoleBinding %s gives the chaos account a %s", dir, rb.Name, rb.RoleRef.Kind)
					}
					for _, role := range All[*rbacv1.Role](r) {
						if role.Name != rb.RoleRef.Name {
							continue
						}
						for _, rule := range role.Rules {
							for _, g := range rule.APIGroups {
								for _, res := range rule.Resources {
									for _, v := range rule.Verbs {
										if !slices.Contains(allowed[g+"/"+res], v) {
											t.Errorf("%s: Role %s lets the chaos account %s %s/%s", dir, role.Name, v, g, res)
										}
									}
								}
							}
						}
					}
				}
			}
		}
		if !bound {
			t.Errorf("%s: the chaos account has no rights here, but its engines target it", dir)
		}
	}
	for _, o := range []string{"overlays/staging", "overlays/prod"} {
		for _, rb := range All[*rbacv1.RoleBinding](decoded(t, o)) {
			for _, s := range rb.Subjects {
				if s.Namespace == ChaosNamespace {
					t.Errorf("%s: RoleBinding %s grants the chaos account rights where no chaos runs", o, rb.Name)
				}
			}
		}
	}
}

// End to end (both sides' policies): the experiment pod reaches each
// service's ops port and nothing else of theirs; the chaos namespace's
// other pods reach no service; nothing reaches the chaos namespace.
func TestChaosProbeTrafficIsExactlyAdmitted(t *testing.T) {
	for _, overlay := range ChaosOverlays {
		n, ns := network(t, "../infra/"+overlay)
		r := decoded(t, "platform/chaos")
		n.Policies = append(n.Policies, All[*networkingv1.NetworkPolicy](r)...)
		for _, o := range All[*corev1.Namespace](r) {
			n.Namespaces[o.Name] = o.Labels
		}
		services, others, outside := probePeers(t, ns)
		var probe, runner Peer
		for _, o := range others {
			switch o.Name {
			case "chaos-probe":
				probe = o
			case "chaos-runner":
				runner = o
			}
		}
		api := Peer{Name: "kubernetes-api", IP: netip.MustParseAddr("172.18.0.2")}
		for _, from := range []Peer{probe, runner} {
			if ok, err := n.Allows(from, api, Port{corev1.ProtocolTCP, 6443}); err != nil || !ok {
				t.Errorf("%s: %s cannot reach the Kubernetes API (%v)", overlay, from.Name, err)
			}
		}
		all := append(append(append([]Peer{}, services...), others...), outside)
		for _, to := range all {
			for _, port := range probePorts {
				ok, err := n.Allows(probe, to, port)
				if err != nil {
					t.Fatal(err)
				}
				want := slices.Contains(Services, to.Name) && port == (Port{corev1.ProtocolTCP, 8080}) && to.Namespace == ns
				if to.Name == "kube-dns" && port.Number == 53 {
					want = true
				}
				if to.Name == "prometheus" && port == (Port{corev1.ProtocolTCP, 9090}) {
					want = true // the promProbes
				}
				if to.Namespace == "" && (port.Number == 443 && port.Protocol == corev1.ProtocolTCP) {
					want = true // outside: the Kubernetes API's 443
				}
				if ok != want {
					t.Errorf("%s: chaos-probe -> %s %s allowed=%v, want %v", overlay, to.Name, port, ok, want)
				}
				if to.Namespace == ChaosNamespace {
					continue
				}
				if ok, _ := n.Allows(runner, to, port); ok && slices.Contains(Services, to.Name) {
					t.Errorf("%s: chaos-runner reaches %s %s", overlay, to.Name, port)
				}
			}
		}
		for _, from := range all {
			for _, port := range probePorts {
				if ok, _ := n.Allows(from, probe, port); ok {
					t.Errorf("%s: %s reaches the chaos probe pod on %s", overlay, from.Name, port)
				}
			}
		}
	}
}

// Litmus 3.x's schema, as declared in litmus.go, refuses what the old
// engines had and what 3.x would not run.
func TestLitmusTypesRefuseWhat3xDoesNotHave(t *testing.T) {
	base := "apiVersion: litmuschaos.io/v1alpha1\nkind: ChaosEngine\nmetadata:\n  name: x\nspec:\n  engineState: active\n  chaosServiceAccount: a\n  appinfo: {appns: n, applabel: app=x, appkind: deployment}\n"
	probe := "  experiments:\n  - name: pod-delete\n    spec:\n      probe:\n      - name: p\n        type: httpProbe\n        mode: %s\n        httpProbe/inputs: {url: 'http://x:8080/ready', method: {get: {criteria: '==', responseCode: '200'}}}\n        runProperties: {probeTimeout: %s, interval: 5s, retry: 3}\n"
	for name, y := range map[string]string{
		"annotationCheck (removed in 3.0)": base + "  annotationCheck: \"false\"\n" + fmt.Sprintf(probe, "Continuous", "3s"),
		"a mode Litmus does not have":      base + fmt.Sprintf(probe, "Always", "3s"),
		"a timeout in 2.x's integers":      base + fmt.Sprintf(probe, "Continuous", "3000"),
		"appkind without applabel":         strings.Replace(base, "applabel: app=x, ", "", 1) + fmt.Sprintf(probe, "Continuous", "3s"),
		"a misspelt probe field":           base + strings.Replace(fmt.Sprintf(probe, "Continuous", "3s"), "retry", "retries", 1),
	} {
		o := Object{APIVersion: "litmuschaos.io/v1alpha1", Kind: "ChaosEngine", Name: "x", YAML: []byte(y)}
		if _, _, err := Typed(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := Object{APIVersion: "litmuschaos.io/v1alpha1", Kind: "ChaosEngine", Name: "x", YAML: []byte(base + fmt.Sprintf(probe, "Continuous", "3s"))}
	if _, _, err := Typed(ok); err != nil {
		t.Errorf("a valid engine was refused: %v", err)
	}
}
