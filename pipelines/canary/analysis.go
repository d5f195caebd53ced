package canary

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strings"
	"text/template"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var metricTemplateGVR = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "metrictemplates"}

// Analysis is a Canary's analysis as the pipeline runs it itself, for a
// workload Flagger cannot target (ac-service's StatefulSet): the same
// interval, failed-check threshold, webhooks and metrics, each metric's
// query read from the same MetricTemplate Flagger uses.
type Analysis struct {
	From      string // namespace/name of the Canary it was read from
	Interval  time.Duration
	Threshold int
	Deadline  time.Duration // the Canary's progressDeadlineSeconds
	Metrics   []Metric
	Webhooks  []Webhook
	// Suspended: Flagger leaves the Canary alone (spec.suspend), so its
	// target's releases are the pipeline's to judge; Target is its
	// targetRef's name.
	Suspended bool
	Target    string
}

// Metric is one check: a MetricTemplate's query and the Canary's range.
type Metric struct {
	Name     string
	Template string // namespace/name of the MetricTemplate
	Query    string // the template's query, not rendered
	Address  string // its Prometheus
	Interval string // the window, e.g. 20s
	Min, Max *float64
}

// Webhook is one of the Canary's webhooks (Flagger's types: pre-rollout,
// rollout, ...).
type Webhook struct {
	Name, Type, URL string
	Timeout         time.Duration
	Metadata        map[string]string
}

// ReadAnalysis reads Canary namespace/name's analysis and its
// MetricTemplates from the cluster: what Flagger itself would run.
func ReadAnalysis(ctx context.Context, client *cluster.Client, namespace, name string) (*Analysis, error) {
	c, err := client.Dynamic().Resource(canaryGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the analysis of Canary %s/%s: %w", namespace, name, err)
	}
	a, refs, err := parseAnalysis(c)
	if err != nil {
		return nil, err
	}
	for i := range a.Metrics {
		ns, tname, _ := strings.Cut(refs[i], "/")
		if ns == "" {
			ns = namespace
		}
		mt, err := client.Dynamic().Resource(metricTemplateGVR).Namespace(ns).Get(ctx, tname, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("Canary %s metric %s: MetricTemplate %s/%s: %w", a.From, a.Metrics[i].Name, ns, tname, err)
		}
		if err := a.Metrics[i].fromTemplate(mt); err != nil {
			return nil, fmt.Errorf("Canary %s metric %s: %w", a.From, a.Metrics[i].Name, err)
		}
	}
	return a, nil
}

// parseAnalysis reads spec.analysis; refs are the metrics' templateRefs
// ("namespace/name", namespace empty for the Canary's own).
func parseAnalysis(c *unstructured.Unstructured) (*Analysis, []string, error) {
	// Flagger's defaults: threshold 1, progressDeadlineSeconds 600.
	a := &Analysis{From: c.GetNamespace() + "/" + c.GetName(), Threshold: 1, Deadline: 600 * time.Second}
	bad := func(field string, err error) error {
		return fmt.Errorf("Canary %s: spec.%s: %v", a.From, field, err)
	}
	var spec struct {
		Suspend   bool `json:"suspend"`
		TargetRef struct {
			Name string `json:"name"`
		} `json:"targetRef"`
		ProgressDeadlineSeconds *int64 `json:"progressDeadlineSeconds"`
		Analysis                *struct {
			Interval  string `json:"interval"`
			Threshold int    `json:"threshold"`
			Metrics   []struct {
				Name        string `json:"name"`
				Interval    string `json:"interval"`
				TemplateRef *struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"templateRef"`
				ThresholdRange *struct {
					Min *float64 `json:"min"`
					Max *float64 `json:"max"`
				} `json:"thresholdRange"`
			} `json:"metrics"`
			Webhooks []struct {
				Name     string            `json:"name"`
				Type     string            `json:"type"`
				URL      string            `json:"url"`
				Timeout  string            `json:"timeout"`
				Metadata map[string]string `json:"metadata"`
			} `json:"webhooks"`
		} `json:"analysis"`
	}
	raw, err := json.Marshal(c.Object["spec"])
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, nil, bad("", err)
	}
	if spec.Analysis == nil {
		return nil, nil, bad("analysis", fmt.Errorf("missing"))
	}
	a.Suspended, a.Target = spec.Suspend, spec.TargetRef.Name
	if spec.ProgressDeadlineSeconds != nil {
		a.Deadline = time.Duration(*spec.ProgressDeadlineSeconds) * time.Second
	}
	if a.Interval, err = time.ParseDuration(spec.Analysis.Interval); err != nil || a.Interval <= 0 {
		return nil, nil, bad("analysis.interval", fmt.Errorf("%q: want a duration like 10s", spec.Analysis.Interval))
	}
	if spec.Analysis.Threshold > 0 {
		a.Threshold = spec.Analysis.Threshold
	}
	var refs []string
	for _, m := range spec.Analysis.Metrics {
		if m.TemplateRef == nil {
			// Flagger's built-in metrics read a mesh's own series.
			return nil, nil, bad("analysis.metrics["+m.Name+"]", fmt.Errorf("no templateRef: the pipeline runs MetricTemplate metrics only"))
		}
		met := Metric{Name: m.Name, Interval: m.Interval}
		if met.Interval == "" {
			met.Interval = "1m" // Flagger's default
		}
		if _, err := time.ParseDuration(met.Interval); err != nil {
			return nil, nil, bad("analysis.metrics["+m.Name+"].interval", err)
		}
		if m.ThresholdRange != nil {
			met.Min, met.Max = m.ThresholdRange.Min, m.ThresholdRange.Max
		}
		if met.Min == nil && met.Max == nil {
			return nil, nil, bad("analysis.metrics["+m.Name+"].thresholdRange", fmt.Errorf("neither min nor max: the check could not fail"))
		}
		a.Metrics = append(a.Metrics, met)
		refs = append(refs, m.TemplateRef.Namespace+"/"+m.TemplateRef.Name)
	}
	if len(a.Metrics) == 0 {
		return nil, nil, bad("analysis.metrics", fmt.Errorf("none: an analysis without a metric judges nothing"))
	}
	for _, w := range spec.Analysis.Webhooks {
		h := Webhook{Name: w.Name, Type: w.Type, URL: w.URL, Metadata: w.Metadata, Timeout: 10 * time.Second}
		if h.Type == "" {
			h.Type = "rollout" // Flagger's default
		}
		switch h.Type {
		case "pre-rollout", "rollout", "post-rollout":
		default:
			// A confirmation or rollback hook the pipeline skipped would be
			// a gate bypassed without a word.
			return nil, nil, bad("analysis.webhooks["+w.Name+"].type", fmt.Errorf("%q: the pipeline runs pre-rollout, rollout and post-rollout hooks only", h.Type))
		}
		// Flagger takes a timeout shorter than two characters as unset.
		if len(w.Timeout) > 1 {
			if h.Timeout, err = time.ParseDuration(w.Timeout); err != nil {
				return nil, nil, bad("analysis.webhooks["+w.Name+"].timeout", err)
			}
		}
		a.Webhooks = append(a.Webhooks, h)
	}
	return a, refs, nil
}

func (m *Metric) fromTemplate(mt *unstructured.Unstructured) error {
	m.Template = mt.GetNamespace() + "/" + mt.GetName()
	typ, _, _ := unstructured.NestedString(mt.Object, "spec", "provider", "type")
	if typ != "prometheus" {
		return fmt.Errorf("MetricTemplate %s: provider %q: the pipeline queries prometheus only", m.Template, typ)
	}
	m.Address, _, _ = unstructured.NestedString(mt.Object, "spec", "provider", "address")
	m.Query, _, _ = unstructured.NestedString(mt.Object, "spec", "query")
	if m.Query == "" {
		return fmt.Errorf("MetricTemplate %s: no spec.query", m.Template)
	}
	return nil
}

// deploymentPods is how the MetricTemplates select a Deployment's pods:
// Flagger's primary runs as Deployment <target>-primary (pods
// <target>-primary-<hash>-<id>), the canary as <target> itself.
const deploymentPods = `-[a-z0-9]+-[a-z0-9]+`

// Pods are the two sides of an analysis the pipeline runs, as Prometheus
// regular expressions of pod names (e.g. ac-service-1 against
// ac-service-0).
type Pods struct{ Canary, Baseline string }

// Render is the metric's query for target's pods: the template rendered
// as Flagger renders it (its functions namespace, name, target, service,
// interval; a StatefulSet has no Canary or Service of Flagger's, so name,
// target and service are all its name; a template using any other, such
// as variables, is refused), then its selectors of the canary's and the primary's pods
// (=~"<target>-…" and =~"<target>-primary-…", on whichever label names
// a pod: pod for the service's own series, media_handler for the load's
// datagrams by media-handler) swapped for pods'.
// A query that selects the canary some other way is refused: run as is,
// it would judge pods that are not the release's.
func (m Metric) Render(namespace, target string, pods Pods) (string, error) {
	fn := func(v string) func() string { return func() string { return v } }
	t, err := template.New(m.Template).Funcs(template.FuncMap{"namespace": fn(namespace), "name": fn(target), "target": fn(target),
		"service": fn(target), "interval": fn(m.Interval)}).Parse(m.Query)
	if err != nil {
		return "", fmt.Errorf("MetricTemplate %s: %w", m.Template, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("MetricTemplate %s: %w", m.Template, err)
	}
	q := b.String()
	primary := fmt.Sprintf(`=~%q`, target+"-primary"+deploymentPods)
	canary := fmt.Sprintf(`=~%q`, target+deploymentPods)
	if !strings.Contains(q, canary) {
		return "", fmt.Errorf("MetricTemplate %s does not select the canary's pods as <label>%s (pod, or media_handler for the load's datagrams): the pipeline cannot point it at %s's pods", m.Template, canary, target)
	}
	// One pass: a baseline's regex may read like the canary's template
	// selector (media-handler's own pods are <target>-<hash>-<id>).
	return strings.NewReplacer(primary, fmt.Sprintf(`=~%q`, pods.Baseline), canary, fmt.Sprintf(`=~%q`, pods.Canary)).Replace(q), nil
}

// Validate renders every metric for target and reads every address, so
// that a template the pipeline cannot run is refused before anything is
// released, not at the first check with a release pod serving.
func (a *Analysis) Validate(namespace, target string, pods Pods) error {
	for _, m := range a.Metrics {
		if _, err := m.Render(namespace, target, pods); err != nil {
			return err
		}
		if _, _, _, err := serviceOf(m.Address, namespace); err != nil {
			return fmt.Errorf("MetricTemplate %s: %w", m.Template, err)
		}
	}
	for _, h := range a.Webhooks {
		if _, _, _, err := serviceOf(h.URL, namespace); err != nil {
			return fmt.Errorf("webhook %s: %w", h.Name, err)
		}
	}
	return nil
}

// CheckResult is one metric's reading at one check.
type CheckResult struct {
	Metric string
	Value  float64 // NaN when the query gave no number
	Passed bool
	Why    string // the reading against its range, or why there was none
}

func (r CheckResult) String() string { return r.Metric + " " + r.Why }

// judge holds a reading to the metric's range as Flagger does: no series
// or NaN is a failed check (never a pass), a value outside min/max fails.
// Stricter than Flagger, which takes the last of several series: more
// than one fails (a query that does not sum to one number is not judging
// what its name says).
func (m Metric) judge(samples []deploy.Sample) CheckResult {
	r := CheckResult{Metric: m.Name, Value: math.NaN()}
	switch {
	case len(samples) == 0:
		r.Why = "no values found"
		return r
	case len(samples) > 1:
		r.Why = fmt.Sprintf("%d series, want one", len(samples))
		return r
	}
	r.Value = samples[0].Value
	switch {
	case math.IsNaN(r.Value):
		r.Why = "NaN"
	case m.Min != nil && r.Value < *m.Min:
		r.Why = fmt.Sprintf("%.2f < %v", r.Value, *m.Min)
	case m.Max != nil && r.Value > *m.Max:
		r.Why = fmt.Sprintf("%.2f > %v", r.Value, *m.Max)
	default:
		r.Passed = true
		r.Why = fmt.Sprintf("%.2f ok", r.Value)
	}
	return r
}

// Check runs every metric once against target's pods.
func (a *Analysis) Check(ctx context.Context, client *cluster.Client, namespace, target string, pods Pods) ([]CheckResult, error) {
	var out []CheckResult
	for _, m := range a.Metrics {
		q, err := m.Render(namespace, target, pods)
		if err != nil {
			return nil, err
		}
		ns, svc, port, err := serviceOf(m.Address, namespace)
		if err != nil {
			return nil, fmt.Errorf("MetricTemplate %s: %w", m.Template, err)
		}
		samples, err := deploy.PrometheusQueryAt(ctx, client, ns, svc, port, q)
		if err != nil {
			out = append(out, CheckResult{Metric: m.Name, Value: math.NaN(), Why: err.Error()})
			continue
		}
		out = append(out, m.judge(samples))
	}
	return out, nil
}

// serviceOf reads an in-cluster address (http://name.namespace[.svc…]:port)
// as the Service the API server proxies to: the pipeline runs outside the
// cluster, with only its kubeconfig.
func serviceOf(address, defaultNamespace string) (namespace, service, port string, err error) {
	u, err := url.Parse(address)
	if err != nil || u.Host == "" {
		return "", "", "", fmt.Errorf("address %q: want http://service.namespace:port", address)
	}
	port = u.Port()
	if port == "" {
		port = "80"
	}
	parts := strings.Split(u.Hostname(), ".")
	service, namespace = parts[0], defaultNamespace
	if len(parts) > 1 {
		namespace = parts[1]
	}
	return namespace, service, port, nil
}

// CallWebhooks calls the analysis's webhooks of one type, as Flagger
// does (a POST of its payload: the target's name and namespace, the
// phase and the hook's metadata), through the API server's service
// proxy. The first that fails is the error.
func (a *Analysis) CallWebhooks(ctx context.Context, client *cluster.Client, hookType, namespace, target, phase string) error {
	for _, h := range a.Webhooks {
		if h.Type != hookType {
			continue
		}
		u, err := url.Parse(h.URL)
		if err != nil {
			return fmt.Errorf("webhook %s: url %q: %w", h.Name, h.URL, err)
		}
		ns, svc, port, err := serviceOf(h.URL, namespace)
		if err != nil {
			return fmt.Errorf("webhook %s: %w", h.Name, err)
		}
		body, _ := json.Marshal(map[string]any{"name": target, "namespace": namespace, "phase": phase, "metadata": h.Metadata})
		hctx, cancel := context.WithTimeout(ctx, h.Timeout)
		out, err := client.Typed.CoreV1().RESTClient().Post().
			AbsPath("/api/v1/namespaces", ns, "services", "http:"+svc+":"+port, "proxy", u.Path).
			SetHeader("Content-Type", "application/json").Body(body).DoRaw(hctx)
		cancel()
		if err != nil {
			return fmt.Errorf("webhook %s (%s): %v: %s", h.Name, hookType, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// postRollout calls the post-rollout hooks once the rollout ended, as
// Flagger does after promotion or rollback: a failure is reported, not
// acted on (there is nothing left to gate).
func (a *Analysis) postRollout(ctx context.Context, client *cluster.Client, namespace, target, phase string, say func(string, ...any)) {
	if err := a.CallWebhooks(ctx, client, "post-rollout", namespace, target, phase); err != nil {
		say("post-rollout: %v", err)
	}
}
