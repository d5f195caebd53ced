package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/darktower/delivery/pipelines/validate"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigyaml "sigs.k8s.io/yaml"
)

var services = []string{"ac-service", "global-controller", "media-handler", "meeting-controller"}

// serviceMonitorFiles reads infra/services/*/service-monitor.yaml as they
// are checked in.
func serviceMonitorFiles(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var docs [][]byte
	for _, s := range services {
		b, err := os.ReadFile(filepath.Join(root(t), "infra", "services", s, "service-monitor.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	objs, err := cluster.ParseObjects(docs)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// The four services' ServiceMonitors (and, in the preview, the chaos
// stage's load's) become jobs scraping /metrics on
// the ops port of the Service named by each selector, in the services'
// namespace only, at each ServiceMonitor's interval and timeout (5 s and
// 4 s: the canary analysis, which also judges ac-service's partitioned
// rollout, reads 20 s windows: docs/operations/canary.md), keeping histograms'
// classic series beside their native buckets — from the checked-in
// files and from the preview overlay as rendered.
func TestScrapeConfigFromTheServicesServiceMonitors(t *testing.T) {
	overlay, err := validate.Render(filepath.Join(root(t), "infra", "overlays", "preview"))
	if err != nil {
		t.Fatal(err)
	}
	for name, objs := range map[string][]*unstructured.Unstructured{"files": serviceMonitorFiles(t), "overlay": overlay} {
		cfg, err := deploy.ScrapeConfigFromServiceMonitors(objs, "preview")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var jobs []string
		for _, sc := range cfg.ScrapeConfigs {
			jobs = append(jobs, sc.JobName)
			interval, timeout := "5s", "4s"
			if sc.MetricsPath != "/metrics" || sc.Scheme != "http" || sc.ScrapeInterval != interval || sc.ScrapeTimeout != timeout {
				t.Errorf("%s: job %s: path %q scheme %q interval %q timeout %q", name, sc.JobName, sc.MetricsPath, sc.Scheme, sc.ScrapeInterval, sc.ScrapeTimeout)
			}
			if !sc.ScrapeClassicHistograms {
				t.Errorf("%s: job %s drops the classic series of histograms that have native buckets", name, sc.JobName)
			}
			if len(sc.KubernetesSDConfigs) != 1 || sc.KubernetesSDConfigs[0].Role != "endpoints" || !slices.Equal(sc.KubernetesSDConfigs[0].Namespaces.Names, []string{"preview"}) {
				t.Errorf("%s: job %s discovers %+v", name, sc.JobName, sc.KubernetesSDConfigs)
			}
			keeps := map[string]string{}
			targets := map[string]bool{}
			for _, rc := range sc.RelabelConfigs {
				if rc.Action == "keep" {
					keeps[strings.Join(rc.SourceLabels, ",")] = rc.Regex
				}
				if rc.TargetLabel != "" {
					targets[rc.TargetLabel] = true
				}
			}
			want := map[string]string{
				"__meta_kubernetes_service_label_app_kubernetes_io_name,__meta_kubernetes_service_labelpresent_app_kubernetes_io_name": "(" + regexp.QuoteMeta(sc.JobName) + ");true",
				"__meta_kubernetes_endpoint_port_name": "ops",
			}
			if len(keeps) != len(want) {
				t.Errorf("%s: job %s keeps %v, want %v", name, sc.JobName, keeps, want)
			}
			for k, v := range want {
				if keeps[k] != v {
					t.Errorf("%s: job %s keep on %s: regex %q, want %q", name, sc.JobName, k, keeps[k], v)
				}
			}
			for _, l := range []string{"namespace", "service", "pod"} {
				if !targets[l] {
					t.Errorf("%s: job %s sets no %s label", name, sc.JobName, l)
				}
			}
		}
		want := services
		if name == "overlay" {
			// The preview also scrapes the chaos stage's load and the
			// canaries' load (smoke.yaml).
			want = []string{"ac-service", "darktower-canary-load", "darktower-load", "global-controller", "media-handler", "meeting-controller"}
		}
		if !slices.Equal(jobs, want) {
			t.Errorf("%s: jobs %v, want %v", name, jobs, want)
		}
	}
}

// The generated prometheus.yml is what Debian's Prometheus of the data
// image accepts: promtool from that same package checks it. The data root
// is made by `go run . node-image` (or any deploy); without it the check
// cannot run here.
func TestScrapeConfigPassesPromtool(t *testing.T) {
	d, err := nodeimage.FindDataServices("", "")
	if err != nil {
		t.Skipf("promtool of the data image unavailable: %v", err)
	}
	cfg, err := deploy.ScrapeConfigFromServiceMonitors(serviceMonitorFiles(t), "preview")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(d.Path("usr/bin/promtool"), "check", "config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, conf)
	}
	if !bytes.Contains(out, []byte("SUCCESS")) {
		t.Fatalf("promtool check config said:\n%s", out)
	}
	version, _ := exec.Command(d.Path("usr/bin/promtool"), "--version").CombinedOutput()
	t.Logf("%s%s", version, out)
}

// What the translation cannot carry is refused, naming the ServiceMonitor.
func TestScrapeConfigRefusesWhatItCannotTranslate(t *testing.T) {
	sm := func(mutate func(m map[string]any)) []*unstructured.Unstructured {
		objs := serviceMonitorFiles(t)[:1]
		o := objs[0].DeepCopy()
		mutate(o.Object)
		return []*unstructured.Unstructured{o}
	}
	endpoint := func(m map[string]any) map[string]any {
		return m["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	}
	for name, c := range map[string]struct {
		objs []*unstructured.Unstructured
		want string
	}{
		"tlsConfig": {sm(func(m map[string]any) { endpoint(m)["tlsConfig"] = map[string]any{"insecureSkipVerify": true} }), "tlsConfig"},
		"matchExpressions": {sm(func(m map[string]any) {
			m["spec"].(map[string]any)["selector"].(map[string]any)["matchExpressions"] = []any{}
		}), "matchExpressions"},
		"timeout over interval": {sm(func(m map[string]any) { endpoint(m)["scrapeTimeout"] = "1m" }), "longer than the interval"},
		"bad duration":          {sm(func(m map[string]any) { endpoint(m)["interval"] = "30 seconds" }), "not a Prometheus duration"},
		"other namespace": {sm(func(m map[string]any) {
			m["metadata"].(map[string]any)["namespace"] = "elsewhere"
		}), "namespace elsewhere"},
		"none": {nil, "no ServiceMonitor"},
	} {
		_, err := deploy.ScrapeConfigFromServiceMonitors(c.objs, "preview")
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.objs != nil && !strings.Contains(err.Error(), "ac-service")) {
			t.Errorf("%s: want an error naming ac-service and saying %q, got %v", name, c.want, err)
		}
	}
}

// The YAML decodes back into the same configuration (the field names are
// Prometheus's, snake_case, none lost).
func TestScrapeConfigYAMLRoundTrips(t *testing.T) {
	cfg, err := deploy.ScrapeConfigFromServiceMonitors(serviceMonitorFiles(t), "preview")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var back deploy.PromConfig
	if err := sigyaml.UnmarshalStrict(conf, &back); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(cfg)
	b, _ := json.Marshal(back)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip changed the configuration:\n%s\n%s", a, b)
	}
	for _, key := range []string{"scrape_configs:", "kubernetes_sd_configs:", "relabel_configs:", "source_labels:", "metrics_path: /metrics", "job_name: ac-service", "scrape_classic_histograms: true"} {
		if !bytes.Contains(conf, []byte(key)) {
			t.Errorf("prometheus.yml lacks %q:\n%s", key, conf)
		}
	}
}
