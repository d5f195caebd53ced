package chaos

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/internal/kindtest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Supported reports whether the executor can run a probe of this type;
// the error says what to do instead.
func Supported(p Probe) error {
	switch p.Type {
	case "httpProbe", "k8sProbe", "promProbe":
		if p.Type == "k8sProbe" && p.Operation != "present" && p.Operation != "absent" {
			return fmt.Errorf("probe %s: k8sProbe operation %q is not supported by the pipeline's executor (present and absent are; create and delete need Litmus)", p.Name, p.Operation)
		}
		return nil
	}
	return fmt.Errorf("probe %s: %s is not supported by the pipeline's executor (it runs httpProbe, k8sProbe present/absent and promProbe); run this engine where Litmus is installed, or express the check as one of those", p.Name, p.Type)
}

// prober makes one try of a probe; nil is a pass.
type prober struct {
	cfg     *rest.Config
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	client  *cluster.Client
	runner  struct{ namespace, pod string } // the pod the httpProbes run from
	timeout time.Duration                   // the exec's bound beyond probeTimeout
}

func (pr *prober) try(ctx context.Context, p Probe) error {
	switch p.Type {
	case "httpProbe":
		return pr.http(ctx, p)
	case "k8sProbe":
		return pr.k8s(ctx, p)
	case "promProbe":
		return pr.prom(ctx, p)
	}
	return Supported(p)
}

// http asks the runner pod, inside the cluster and under the experiment
// pod's labels (so the same NetworkPolicies judge it as Litmus's
// experiment pod), for the URL's status code, then compares it.
func (pr *prober) http(ctx context.Context, p Probe) error {
	timeout := p.Run.ProbeTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	// The exec itself (API server, kubelet) gets a margin over the
	// request's own bound, which netprobe enforces.
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	out, err := kindtest.Exec(ctx, pr.cfg, pr.cs, pr.runner.namespace, pr.runner.pod, "netprobe", "http", "--timeout", timeout.String(), "--method", p.Method, p.URL)
	if err != nil {
		return fmt.Errorf("%s %s: no answer: %s", p.Method, p.URL, lastLine(err.Error()))
	}
	code, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("%s %s: runner printed %q, not a status code", p.Method, p.URL, out)
	}
	ok, err := compareInt(code, p.Criteria, p.ResponseCode)
	if err != nil {
		return fmt.Errorf("probe %s: %w", p.Name, err)
	}
	if !ok {
		return fmt.Errorf("%s %s: %d, want %s %s", p.Method, p.URL, code, p.Criteria, p.ResponseCode)
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// compareInt is Litmus's integer comparison (litmus-go pkg/probe/comparator
// CompareInt) for the criteria it knows, "oneOf" taking "[a,b,...]".
func compareInt(got int, criteria, want string) (bool, error) {
	if criteria == "oneOf" {
		for _, v := range strings.Split(strings.Trim(want, "[] "), ",") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return false, fmt.Errorf("oneOf %q: %q is not an integer", want, v)
			}
			if n == got {
				return true, nil
			}
		}
		return false, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(want))
	if err != nil {
		return false, fmt.Errorf("expected value %q is not an integer", want)
	}
	return compareFloat(float64(got), criteria, float64(n))
}

func compareFloat(got float64, criteria string, want float64) (bool, error) {
	switch criteria {
	case "==":
		return got == want, nil
	case "!=":
		return got != want, nil
	case ">":
		return got > want, nil
	case "<":
		return got < want, nil
	case ">=":
		return got >= want, nil
	case "<=":
		return got <= want, nil
	}
	return false, fmt.Errorf("criteria %q is not supported by the pipeline's executor (==, !=, >, <, >=, <=; oneOf for response codes)", criteria)
}

// k8s lists the probe's resource with its selectors (litmus-go
// pkg/probe/k8sprobe: present fails on none, absent on any).
func (pr *prober) k8s(ctx context.Context, p Probe) error {
	parts := strings.Split(p.Resource, "/")
	var gvr schema.GroupVersionResource
	switch len(parts) {
	case 2:
		gvr = schema.GroupVersionResource{Version: parts[0], Resource: parts[1]}
	case 3:
		gvr = schema.GroupVersionResource{Group: parts[0], Version: parts[1], Resource: parts[2]}
	default:
		return fmt.Errorf("probe %s: resource %q is not [group/]version/resource", p.Name, p.Resource)
	}
	list, err := pr.dyn.Resource(gvr).Namespace(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.LabelSelector, FieldSelector: p.FieldSelector})
	if err != nil {
		return fmt.Errorf("listing %s in %s: %w", p.Resource, p.Namespace, err)
	}
	what := fmt.Sprintf("%s in %s matching %q, %q", p.Resource, p.Namespace, p.LabelSelector, p.FieldSelector)
	switch p.Operation {
	case "present":
		if len(list.Items) == 0 {
			return fmt.Errorf("no %s (want present)", what)
		}
	case "absent":
		if len(list.Items) != 0 {
			return fmt.Errorf("%d %s (want absent)", len(list.Items), what)
		}
	default:
		return Supported(p)
	}
	return nil
}

// prom runs the query against the deploy stage's Prometheus (through the
// API server; the probe's endpoint names that same Prometheus in the
// cluster) and compares the first sample with the comparator.
func (pr *prober) prom(ctx context.Context, p Probe) error {
	if p.Run.ProbeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Run.ProbeTimeout)
		defer cancel()
	}
	samples, err := deploy.PrometheusQuery(ctx, pr.client, p.Query)
	if err != nil {
		return err
	}
	if len(samples) == 0 {
		return fmt.Errorf("prometheus query %q: no sample", p.Query)
	}
	want, err := strconv.ParseFloat(p.Value, 64)
	if err != nil {
		return fmt.Errorf("probe %s: comparator value %q is not a number", p.Name, p.Value)
	}
	ok, err := compareFloat(samples[0].Value, p.Comparator, want)
	if err != nil {
		return fmt.Errorf("probe %s: %w", p.Name, err)
	}
	if !ok {
		return fmt.Errorf("prometheus query %q: %g, want %s %s", p.Query, samples[0].Value, p.Comparator, p.Value)
	}
	return nil
}

// probeRun is one probe's life in one experiment: its triggers' outcomes
// by phase and what the first failed one said.
type probeRun struct {
	probe Probe
	mu    sync.Mutex
	out   Outcomes
	tries int    // tries made, all triggers together
	first string // the first failed trigger's last error, with when
}

func (r *probeRun) record(phase Phase, ok bool, tries int, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out == nil {
		r.out = Outcomes{}
	}
	r.out[phase] = append(r.out[phase], ok)
	r.tries += tries
	if !ok && r.first == "" {
		r.first = why
	}
}

// trigger is one trigger: up to Attempts() tries, each bounded by
// probeTimeout, Interval apart, passing at the first try that passes
// (RunProperties.Trigger). It returns the last try's error on failure.
func (x *execution) trigger(ctx context.Context, r *probeRun) (bool, int, error) {
	var err error
	n := r.probe.Run.Attempts()
	for i := 0; i < n; i++ {
		if err = x.prober.try(ctx, r.probe); err == nil {
			return true, i + 1, nil
		}
		if ctx.Err() != nil {
			return false, i + 1, ctx.Err()
		}
		if i < n-1 {
			select {
			case <-ctx.Done():
				return false, i + 1, ctx.Err()
			case <-time.After(r.probe.Run.Interval):
			}
		}
	}
	return false, n, err
}

// once is a one-shot trigger in the current phase (SOT, EOT, Edge), after
// initialDelay.
func (x *execution) once(ctx context.Context, r *probeRun) bool {
	if !sleep(ctx, r.probe.Run.InitialDelay, nil) {
		return false
	}
	ok, n, err := x.trigger(ctx, r)
	x.note(r, ok, n, err)
	return ok
}

// poll triggers r every probePollingInterval until stop is closed or a
// trigger fails (Continuous, OnChaos: Litmus stops a probe at its first
// failure). A trigger under way when stop closes completes and counts.
// onFail runs at a failure (stopOnFailure ends the chaos).
func (x *execution) poll(ctx context.Context, r *probeRun, stop <-chan struct{}, onFail func()) {
	if !sleep(ctx, r.probe.Run.InitialDelay, stop) {
		return
	}
	for {
		ok, n, err := x.trigger(ctx, r)
		if ctx.Err() != nil {
			return
		}
		x.note(r, ok, n, err)
		if !ok {
			onFail()
			return
		}
		if !sleep(ctx, r.probe.Run.PollingInterval, stop) {
			return
		}
	}
}

func (x *execution) note(r *probeRun, ok bool, tries int, err error) {
	phase := x.currentPhase()
	why := ""
	if !ok {
		why = fmt.Sprintf("%s, %s into the experiment, after %d tr%s: %v", phase, time.Since(x.start).Round(100*time.Millisecond), tries, map[bool]string{true: "y", false: "ies"}[tries == 1], err)
		x.say("probe %s FAILED in %s", r.probe.Name, why)
	}
	r.record(phase, ok, tries, why)
}

// sleep waits d; false when ctx ended or stop closed first.
func sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return ctx.Err() == nil
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}
