package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/nodeimage"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Prometheus's objects: its namespace made restricted unless the overlay
// renders one, the pod as the package's account with the configuration's
// hash on its template (a new configuration rolls it).
func TestRenderPrometheus(t *testing.T) {
	d := &nodeimage.DataServices{Ref: "darktower.local/dataservices:test", PrometheusUID: 101, PrometheusGID: 103}
	cfg := &PromConfig{Global: PromGlobal{ScrapeInterval: "30s", ScrapeTimeout: "10s"}, ScrapeConfigs: []ScrapeConfig{{JobName: "a"}}}
	objs, err := renderPrometheus(d, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = o
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"} {
		if byKind[k] == nil {
			t.Fatalf("no %s among %d objects", k, len(objs))
		}
	}
	if l := byKind["Namespace"].GetLabels(); l["pod-security.kubernetes.io/enforce"] != "restricted" || byKind["Namespace"].GetName() != MonitoringNamespace {
		t.Errorf("namespace %s labels %v", byKind["Namespace"].GetName(), l)
	}
	dep := byKind["Deployment"].Object
	uid, _, _ := unstructured.NestedFieldNoCopy(dep, "spec", "template", "spec", "securityContext", "runAsUser")
	containers, _, _ := unstructured.NestedSlice(dep, "spec", "template", "spec", "containers")
	if fmt.Sprint(uid) != "101" || len(containers) != 1 || containers[0].(map[string]any)["image"] != d.Ref {
		t.Errorf("runAsUser %v, containers %v", uid, containers)
	}
	// Native histograms on (the canary's p99 check reads them), and every
	// job keeps the classic series too (the alerts read _bucket).
	if cmd, _ := containers[0].(map[string]any)["command"].([]any); !slices.Contains(cmd, any("--enable-feature=native-histograms")) {
		t.Errorf("Prometheus runs %v, without --enable-feature=native-histograms", cmd)
	}
	if l := byKind["Deployment"].GetNamespace(); l != MonitoringNamespace {
		t.Errorf("Deployment in %q", l)
	}
	hash := func(o []*unstructured.Unstructured) string {
		for _, x := range o {
			if x.GetKind() == "Deployment" {
				h, _, _ := unstructured.NestedString(x.Object, "spec", "template", "metadata", "annotations", "darktower.dev/config-sha256")
				return h
			}
		}
		return ""
	}
	cfg.ScrapeConfigs[0].JobName = "b"
	again, err := renderPrometheus(d, cfg, []*unstructured.Unstructured{byKind["Namespace"]})
	if err != nil {
		t.Fatal(err)
	}
	if hash(objs) == "" || hash(objs) == hash(again) {
		t.Errorf("config hash %q, after a change %q", hash(objs), hash(again))
	}
	for _, o := range again {
		if o.GetKind() == "Namespace" {
			t.Error("the overlay renders the namespace, yet another was made")
		}
	}
	cfg.ScrapeConfigs[0].ScrapeClassicHistograms = true
	withClassic, err := renderPrometheus(d, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range withClassic {
		if o.GetKind() == "ConfigMap" {
			conf, _, _ := unstructured.NestedString(o.Object, "data", "prometheus.yml")
			if !strings.Contains(conf, "scrape_classic_histograms: true") {
				t.Errorf("prometheus.yml lacks scrape_classic_histograms: true:\n%s", conf)
			}
		}
	}
}
