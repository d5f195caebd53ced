package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigyaml "sigs.k8s.io/yaml"
)

// MonitoringNamespace is where Prometheus runs: the namespace the
// services' NetworkPolicies admit it from (infra/platform/observability).
const MonitoringNamespace = "monitoring"

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// the translation understands. Decoding is strict: a field it would
// silently drop (TLS, auth, relabelings, another namespace) is an error
// instead of a Prometheus that scrapes something else than the cloud's.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// PromConfig is a Prometheus configuration file (prometheus.yml), with
// the fields the deploy stage writes.
type PromConfig struct {
	Global        PromGlobal     `json:"global"`
	ScrapeConfigs []ScrapeConfig `json:"scrape_configs"`
}

// PromGlobal is the configuration's global section.
type PromGlobal struct {
	ScrapeInterval string `json:"scrape_interval"`
	ScrapeTimeout  string `json:"scrape_timeout"`
}

// ScrapeConfig is one scrape job.
type ScrapeConfig struct {
	JobName        string `json:"job_name"`
	ScrapeInterval string `json:"scrape_interval,omitempty"`
	ScrapeTimeout  string `json:"scrape_timeout,omitempty"`
	MetricsPath    string `json:"metrics_path,omitempty"`
	Scheme         string `json:"scheme,omitempty"`
	// ScrapeClassicHistograms keeps a histogram's classic buckets
	// (_bucket, _sum, _count) when it also has native buckets, so that both
	// forms are stored. Prometheus 2.53 (Debian's, in the data image) takes
	// it per job only: its global section has no such key (3.x renames it
	// always_scrape_classic_histograms).
	ScrapeClassicHistograms bool            `json:"scrape_classic_histograms,omitempty"`
	KubernetesSDConfigs     []KubernetesSD  `json:"kubernetes_sd_configs"`
	RelabelConfigs          []RelabelConfig `json:"relabel_configs"`
}

// KubernetesSD is a kubernetes_sd_configs entry.
type KubernetesSD struct {
	Role       string       `json:"role"`
	Namespaces SDNamespaces `json:"namespaces"`
}

// SDNamespaces restricts discovery to namespaces.
type SDNamespaces struct {
	Names []string `json:"names"`
}

// RelabelConfig is a relabel_configs entry.
type RelabelConfig struct {
	SourceLabels []string `json:"source_labels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	TargetLabel  string   `json:"target_label,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// ScrapeConfigFromServiceMonitors translates the ServiceMonitors among
// objs into a Prometheus configuration scraping namespace's services, the
// way prometheus-operator would: endpoints discovered in that namespace
// only, kept when the Service carries every matchLabels entry and the
// endpoint's port has the ServiceMonitor's port name; path, scheme,
// interval and timeout from the ServiceMonitor's endpoint; the job named
// after the ServiceMonitor; namespace, service and pod labels on every
// series. Every job stores both forms of a histogram that has native
// buckets, native and classic (Prometheus runs with native histograms
// enabled: manifests/prometheus.yaml): the canary analysis reads the
// native http_request_duration_seconds, alerts and runbooks its _bucket
// series. Other objects are ignored; a ServiceMonitor using a field the
// translation does not carry is an error.
func ScrapeConfigFromServiceMonitors(objs []*unstructured.Unstructured, namespace string) (*PromConfig, error) {
	cfg := &PromConfig{Global: PromGlobal{ScrapeInterval: "30s", ScrapeTimeout: "10s"}}
	var monitors []serviceMonitor
	for _, o := range objs {
		if o.GetKind() != "ServiceMonitor" {
			continue
		}
		raw, err := json.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		var sm serviceMonitor
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sm); err != nil {
			return nil, fmt.Errorf("ServiceMonitor %s: %w (the deploy stage translates selector.matchLabels and endpoints' port, path, scheme, interval, scrapeTimeout only)", o.GetName(), err)
		}
		if sm.APIVersion != "monitoring.coreos.com/v1" {
			return nil, fmt.Errorf("ServiceMonitor %s: apiVersion %s, want monitoring.coreos.com/v1", o.GetName(), sm.APIVersion)
		}
		if sm.Metadata.Namespace != "" && sm.Metadata.Namespace != namespace {
			return nil, fmt.Errorf("ServiceMonitor %s is in namespace %s, the services in %s", sm.Metadata.Name, sm.Metadata.Namespace, namespace)
		}
		if len(sm.Spec.Selector.MatchLabels) == 0 {
			return nil, fmt.Errorf("ServiceMonitor %s selects no labels: it would scrape every Service of %s", sm.Metadata.Name, namespace)
		}
		if len(sm.Spec.Endpoints) == 0 {
			return nil, fmt.Errorf("ServiceMonitor %s has no endpoints", sm.Metadata.Name)
		}
		monitors = append(monitors, sm)
	}
	sort.Slice(monitors, func(i, j int) bool { return monitors[i].Metadata.Name < monitors[j].Metadata.Name })
	jobs := map[string]bool{}
	for _, sm := range monitors {
		for i, ep := range sm.Spec.Endpoints {
			job := sm.Metadata.Name
			if len(sm.Spec.Endpoints) > 1 {
				job = fmt.Sprintf("%s/%d", job, i) // job names must be unique
			}
			if jobs[job] {
				return nil, fmt.Errorf("two ServiceMonitors make scrape job %s", job)
			}
			jobs[job] = true
			if ep.Port == "" {
				return nil, fmt.Errorf("ServiceMonitor %s endpoint %d names no port (targetPort is not translated)", sm.Metadata.Name, i)
			}
			switch ep.Scheme {
			case "", "http", "https":
			default:
				return nil, fmt.Errorf("ServiceMonitor %s endpoint %d: scheme %q", sm.Metadata.Name, i, ep.Scheme)
			}
			interval, timeout := ep.Interval, ep.ScrapeTimeout
			iv, err := promDuration(interval, cfg.Global.ScrapeInterval)
			if err != nil {
				return nil, fmt.Errorf("ServiceMonitor %s endpoint %d interval: %w", sm.Metadata.Name, i, err)
			}
			tv, err := promDuration(timeout, cfg.Global.ScrapeTimeout)
			if err != nil {
				return nil, fmt.Errorf("ServiceMonitor %s endpoint %d scrapeTimeout: %w", sm.Metadata.Name, i, err)
			}
			if tv > iv {
				return nil, fmt.Errorf("ServiceMonitor %s endpoint %d: scrapeTimeout %s longer than the interval %s (Prometheus refuses that)", sm.Metadata.Name, i, tv, iv)
			}
			sc := ScrapeConfig{JobName: job, ScrapeInterval: interval, ScrapeTimeout: timeout, MetricsPath: ep.Path, Scheme: ep.Scheme,
				ScrapeClassicHistograms: true,
				KubernetesSDConfigs:     []KubernetesSD{{Role: "endpoints", Namespaces: SDNamespaces{Names: []string{namespace}}}}}
			keys := make([]string, 0, len(sm.Spec.Selector.MatchLabels))
			for k := range sm.Spec.Selector.MatchLabels {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				// The value and the label's presence, as the operator does:
				// an empty matchLabels value matches only a present label.
				l := sanitizeLabelName(k)
				sc.RelabelConfigs = append(sc.RelabelConfigs, RelabelConfig{Action: "keep",
					SourceLabels: []string{"__meta_kubernetes_service_label_" + l, "__meta_kubernetes_service_labelpresent_" + l},
					Regex:        "(" + regexp.QuoteMeta(sm.Spec.Selector.MatchLabels[k]) + ");true"})
			}
			sc.RelabelConfigs = append(sc.RelabelConfigs,
				RelabelConfig{Action: "keep", SourceLabels: []string{"__meta_kubernetes_endpoint_port_name"}, Regex: regexp.QuoteMeta(ep.Port)},
				RelabelConfig{SourceLabels: []string{"__meta_kubernetes_namespace"}, TargetLabel: "namespace"},
				RelabelConfig{SourceLabels: []string{"__meta_kubernetes_service_name"}, TargetLabel: "service"},
				RelabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_name"}, TargetLabel: "pod"},
				RelabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_container_name"}, TargetLabel: "container"},
				RelabelConfig{TargetLabel: "endpoint", Replacement: ep.Port},
			)
			cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, sc)
		}
	}
	if len(cfg.ScrapeConfigs) == 0 {
		return nil, fmt.Errorf("no ServiceMonitor to translate: Prometheus would scrape nothing")
	}
	return cfg, nil
}

// YAML is the configuration as prometheus.yml.
func (c *PromConfig) YAML() ([]byte, error) { return sigyaml.Marshal(c) }

var nonLabelChar = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitizeLabelName is how Prometheus's Kubernetes discovery names a
// Kubernetes label in its meta labels (strutil.SanitizeLabelName).
func sanitizeLabelName(s string) string { return nonLabelChar.ReplaceAllString(s, "_") }

var promDurationRE = regexp.MustCompile(`^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$`)

// promDuration parses Prometheus's duration syntax (model.ParseDuration:
// units y w d h m s ms, largest first), or def when s is empty.
func promDuration(s, def string) (time.Duration, error) {
	if s == "" {
		s = def
	}
	if s == "0" {
		return 0, nil
	}
	m := promDurationRE.FindStringSubmatch(s)
	if m == nil || strings.TrimSpace(s) == "" {
		return 0, fmt.Errorf("%q is not a Prometheus duration (e.g. 30s, 1m30s)", s)
	}
	units := []time.Duration{365 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second, time.Millisecond}
	var d time.Duration
	for i, u := range units {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", s, err)
		}
		d += time.Duration(n) * u
	}
	return d, nil
}
