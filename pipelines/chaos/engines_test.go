package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/deploy"
)

const infra = "../../infra"

// The repository's real chaos: the stage's settings, the definitions and
// the preview's engines, as a `chaos run` would read them.
func load(t *testing.T) (Settings, map[string]Definition, []Experiment) {
	t.Helper()
	s, err := LoadSettings(infra + "/ci/chaos-tests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defs, err := LoadDefinitions(infra + "/platform/chaos")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Environments) != 1 || s.Environments[0].Overlay != "overlays/preview" {
		t.Fatalf("environments: %+v", s.Environments)
	}
	exps, err := LoadEngines(infra+"/"+s.Environments[0].Engines, defs)
	if err != nil {
		t.Fatal(err)
	}
	return s, defs, exps
}

func byEngine(exps []Experiment, name string) (Experiment, bool) {
	for _, e := range exps {
		if e.Engine == name {
			return e, true
		}
	}
	return Experiment{}, false
}

func TestSettings(t *testing.T) {
	s, _, _ := load(t)
	if s.ChaosNamespace != "dark-tower-chaos" || !s.Sequential {
		t.Errorf("settings: %+v", s)
	}
	if d, _ := s.Timeout(); d != 10*time.Minute {
		t.Errorf("result timeout %v", d)
	}
}

func TestDefinitionsArePinned(t *testing.T) {
	_, defs, _ := load(t)
	for _, name := range []string{"pod-delete", "container-kill", "pod-network-loss"} {
		d, ok := defs[name]
		if !ok {
			t.Errorf("no definition %s", name)
			continue
		}
		if d.Image != "litmuschaos/go-runner:3.29.0" {
			t.Errorf("%s: image %s", name, d.Image)
		}
		if lib, ok := d.Env["LIB_IMAGE"]; ok && lib != d.Image {
			t.Errorf("%s: helper image %s differs from %s", name, lib, d.Image)
		}
		if _, ok := d.Env["CHAOS_NAMESPACE"]; ok {
			t.Errorf("%s overrides CHAOS_NAMESPACE", name)
		}
	}
}

func TestPreviewEngines(t *testing.T) {
	_, _, exps := load(t)
	var names []string
	for _, e := range exps {
		names = append(names, e.Engine)
		if e.Namespace != "dark-tower-chaos" || e.ServiceAccount != "litmus-experiments" {
			t.Errorf("%s: runs in %q as %q", e.Engine, e.Namespace, e.ServiceAccount)
		}
		if len(e.Probes) == 0 {
			t.Errorf("%s: no probe", e.Engine)
		}
		if _, ok := e.Env["CHAOS_NAMESPACE"]; ok {
			t.Errorf("%s: CHAOS_NAMESPACE set", e.Engine)
		}
	}
	want := "ac-service-pod-delete global-controller-pod-delete media-handler-container-kill media-handler-pod-delete meeting-controller-network-loss meeting-controller-pod-delete redis-pod-delete"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("engines:\n got %s\nwant %s", got, want)
	}

	ac, _ := byEngine(exps, "ac-service-pod-delete")
	if ac.Fault != "pod-delete" || ac.Target != (Target{Namespace: "preview", Label: "app.kubernetes.io/name=ac-service", Kind: "statefulset"}) {
		t.Errorf("ac-service-pod-delete: %s %+v", ac.Fault, ac.Target)
	}
	if ac.Result() != "ac-service-pod-delete-pod-delete" {
		t.Errorf("result name %s", ac.Result())
	}
	if d, err := ac.Duration(); err != nil || d != 60*time.Second {
		t.Errorf("duration %v %v", d, err)
	}
	if d, err := ac.Interval(); err != nil || d != 10*time.Second {
		t.Errorf("interval %v %v", d, err)
	}
	if f, err := ac.Force(); err != nil || f {
		t.Errorf("force %v %v", f, err)
	}
	if p, err := ac.PodsAffectedPercent(); err != nil || p != 50 {
		t.Errorf("pods affected %v %v", p, err)
	}
	// From the definition, not the engine: the runner's merge.
	if ac.Env["DEFAULT_HEALTH_CHECK"] != "false" || ac.Env["SEQUENCE"] != "parallel" {
		t.Errorf("definition defaults not merged: %v", ac.Env)
	}
	p := ac.Probes[0]
	if p.Type != "httpProbe" || p.Mode != Continuous || p.URL != "http://ac-service.preview.svc:8080/ready" || p.Method != "GET" || p.Criteria != "==" || p.ResponseCode != "200" {
		t.Errorf("probe %+v", p)
	}
	// ADR-0012's readiness probe: 3 s timeout, every 5 s, 3 failures.
	if p.Run.ProbeTimeout != 3*time.Second || p.Run.Interval != 5*time.Second || p.Run.Attempts() != 3 || p.Run.PollingInterval != 5*time.Second || p.Run.StopOnFailure {
		t.Errorf("run properties %+v", p.Run)
	}
	if w := p.Run.FailureWindow(); w != 19*time.Second {
		t.Errorf("failure window %v, want 3×3 s + 2×5 s", w)
	}

	// No lost state, judged from Prometheus in the deploy pipeline's
	// monitoring namespace: one kid across the AC pods; every MC scraped
	// is registered with GC. Both wait for a scrape of the replacements.
	prom := "http://prometheus." + deploy.MonitoringNamespace + ".svc:9090"
	if len(ac.Probes) != 3 || ac.Probes[1].Type != "promProbe" || ac.Probes[1].Mode != EOT || ac.Probes[1].Endpoint != prom ||
		!strings.Contains(ac.Probes[1].Query, "ac_signing_key_info") || ac.Probes[1].Comparator != "==" || ac.Probes[1].Value != "1" ||
		ac.Probes[1].Run.InitialDelay < 30*time.Second {
		t.Errorf("ac-service's kid probe %+v", ac.Probes)
	}
	mc, _ := byEngine(exps, "meeting-controller-pod-delete")
	if len(mc.Probes) != 4 || mc.Probes[1].Type != "promProbe" || mc.Probes[1].Mode != EOT || mc.Probes[1].Endpoint != prom ||
		!strings.Contains(mc.Probes[1].Query, "gc_meeting_controllers_live") || mc.Probes[1].Comparator != ">=" ||
		mc.Probes[1].Run.InitialDelay < 10*time.Second {
		t.Errorf("meeting-controller's registration probe %+v", mc.Probes)
	}
	// Under the load the stage runs: the error budget where a service's
	// pods are deleted; media that keeps relaying through MC's restart and
	// relays again after media-handler's. Every promProbe asks the same
	// Prometheus.
	probes := map[string][]string{}
	for _, e := range exps {
		for _, p := range e.Probes {
			probes[e.Engine] = append(probes[e.Engine], p.Name)
			if p.Type == "promProbe" && p.Endpoint != prom {
				t.Errorf("%s: probe %s asks %s", e.Engine, p.Name, p.Endpoint)
			}
			if p.Name == "error-budget" && (!strings.Contains(p.Query, "darktower_load_requests_total") || p.Comparator != "<=" || p.Value != "0.02") {
				t.Errorf("%s: error budget %+v", e.Engine, p)
			}
		}
	}
	for engine, want := range map[string]string{
		"ac-service-pod-delete":           "service-stays-ready signing-key-unchanged error-budget",
		"global-controller-pod-delete":    "service-stays-ready error-budget",
		"meeting-controller-pod-delete":   "service-stays-ready every-mc-registered error-budget media-unbroken",
		"media-handler-pod-delete":        "service-stays-ready media-relays",
		"media-handler-container-kill":    "service-stays-ready media-relays",
		"meeting-controller-network-loss": "service-stays-ready",
		"redis-pod-delete":                "meeting-controller-ready-after redis-back",
	} {
		if got := strings.Join(probes[engine], " "); got != want {
			t.Errorf("%s probes: %s, want %s", engine, got, want)
		}
	}

	redis, _ := byEngine(exps, "redis-pod-delete")
	if redis.Target != (Target{Namespace: "dark-tower-data", Label: "app.kubernetes.io/name=redis-cluster", Kind: "deployment"}) {
		t.Errorf("redis target %+v", redis.Target)
	}
	if f, _ := redis.Force(); !f {
		t.Error("redis pod-delete should force")
	}
	if len(redis.Probes) != 2 || redis.Probes[0].Mode != EOT || redis.Probes[1].Type != "k8sProbe" || redis.Probes[1].Resource != "v1/pods" ||
		redis.Probes[1].Namespace != "dark-tower-data" || redis.Probes[1].Operation != "present" || redis.Probes[1].Run.Attempts() != 12 {
		t.Errorf("redis probes %+v", redis.Probes)
	}

	kill, _ := byEngine(exps, "media-handler-container-kill")
	if kill.Fault != "container-kill" || kill.Env["TARGET_CONTAINER"] != "media-handler" || kill.Env["LIB_IMAGE"] != "litmuschaos/go-runner:3.29.0" {
		t.Errorf("container-kill %+v", kill)
	}
	loss, _ := byEngine(exps, "meeting-controller-network-loss")
	if loss.Fault != "pod-network-loss" || loss.Env["NETWORK_PACKET_LOSS_PERCENTAGE"] != "100" {
		t.Errorf("network loss %+v", loss)
	}
}

// The stage finds the services' namespace, where it runs its load, in the
// environment's chaos-target; and it checks the engines asked for before
// it needs a cluster.
func TestStageReadsTheEnvironment(t *testing.T) {
	ns, err := servicesNamespace(infra + "/overlays/preview/chaos")
	if err != nil || ns != "preview" {
		t.Fatalf("services namespace %q, %v", ns, err)
	}
	if _, err := servicesNamespace(infra + "/platform/chaos/operator"); err == nil || !strings.Contains(err.Error(), "chaos-target") {
		t.Errorf("a kustomization without chaos-target: %v", err)
	}
	names, err := StageEngines("../..", []string{"redis-pod-delete", "ac-service-pod-delete"})
	if err != nil || strings.Join(names, " ") != "ac-service-pod-delete redis-pod-delete" {
		t.Errorf("StageEngines: %v %v", names, err)
	}
	if _, err := StageEngines("../..", []string{"nope"}); !errors.As(err, new(UnknownEngineError)) {
		t.Errorf("an unknown engine: %v", err)
	}
}

func TestParseEnginesRefuses(t *testing.T) {
	head := "apiVersion: litmuschaos.io/v1alpha1\nkind: ChaosEngine\nmetadata: {name: e, namespace: c}\nspec:\n  chaosServiceAccount: a\n  appinfo: {appns: n, applabel: app=x, appkind: deployment}\n  experiments:\n  - name: pod-delete\n    spec:\n      probe:\n      - name: p\n        type: httpProbe\n        mode: %s\n        httpProbe/inputs: {url: 'http://x:8080/ready', method: {get: {criteria: '==', responseCode: '200'}}}\n        runProperties: {probeTimeout: %s, interval: 5s}\n"
	for name, doc := range map[string]string{
		"2.x integer timeout": sprintf(head, "Continuous", "3000"),
		"unknown mode":        sprintf(head, "Always", "3s"),
		"kind without label":  strings.Replace(sprintf(head, "EOT", "3s"), "applabel: app=x, ", "", 1),
	} {
		if _, err := ParseEngines([]byte(doc), nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseEngines([]byte(sprintf(head, "EOT", "3s")), map[string]Definition{}); err == nil {
		t.Error("an engine whose experiment has no definition was accepted")
	}
	exps, err := ParseEngines([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n"+sprintf(head, "EOT", "3s")), nil)
	if err != nil || len(exps) != 1 || exps[0].Probes[0].Run.Attempts() != 1 {
		t.Errorf("%v %+v", err, exps)
	}
}
