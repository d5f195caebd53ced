package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/upstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ReleaseAnnotation names a release on the pod template: a new value is a
// new revision, which Flagger analyses.
const ReleaseAnnotation = "darktower.dev/release"

// Release is one change to a canaried service: a new pod template (its
// release name, and the container environment it sets).
type Release struct {
	Service string            // the Deployment (and Canary) name
	Name    string            // the release's name (ReleaseAnnotation)
	Env     map[string]string // container environment to set
	Image   string            // if set, the container's new image
	// Routes, if set, are the routes the router carries to the service
	// (as its metrics name them): when the canary served is read from
	// those alone, since the services' calls to each other (heartbeats,
	// registrations) reach canary pods without a router where no mesh
	// runs.
	Routes []string
	// CPURequest, if set, is the container's new CPU request (a release
	// may resize; the proof shrinks the services so that a primary and a
	// canary of each fit one kind node).
	CPURequest string
}

// Result is how a release went, timed.
type Result struct {
	Release
	Outcome *Outcome
	Applied time.Time
	// Weights are the canary's traffic shares in the order its HTTPRoute
	// carried them (0 excluded), e.g. [5 10 50] then promotion.
	Weights []int64
	// FirstTraffic is when the HTTPRoute first sent the canary traffic:
	// where a faulty release's regression starts.
	FirstTraffic time.Time
	// TrafficBack is when the HTTPRoute sent everything to the primary
	// again after FirstTraffic (rollback), or promotion finished.
	TrafficBack time.Time
	// ServedFirst and ServedLast are the first and the last scrape of the
	// canary's pods that counted new API requests (Prometheus, every 5 s):
	// when the canary really served, as opposed to when the route said.
	ServedFirst, ServedLast time.Time
}

// RollbackTime is from the regression's start (the canary's first traffic)
// to all traffic on the primary again.
func (r *Result) RollbackTime() time.Duration {
	if r.FirstTraffic.IsZero() || r.TrafficBack.IsZero() {
		return 0
	}
	return r.TrafficBack.Sub(r.FirstTraffic)
}

// Summary is one line: the outcome, the weights with their times and the
// rollback time.
func (r *Result) Summary() string {
	var steps []string
	var prev int64 = -1
	for _, o := range r.Outcome.Timeline {
		if o.RouteCanary != prev && o.RouteCanary >= 0 {
			steps = append(steps, fmt.Sprintf("%d%%@%.0fs", o.RouteCanary, o.At.Sub(r.Applied).Seconds()))
			prev = o.RouteCanary
		}
	}
	end := "promoted"
	if !r.Outcome.Promoted() {
		end = "rolled back (" + r.Outcome.Reason + ")"
	}
	s := fmt.Sprintf("%s %s: %s after %.0fs; canary traffic %s", r.Service, r.Name, end,
		r.Outcome.Timeline[len(r.Outcome.Timeline)-1].At.Sub(r.Applied).Seconds(), strings.Join(steps, " → "))
	if !r.Outcome.Promoted() && !r.FirstTraffic.IsZero() {
		s += fmt.Sprintf("; regression start → traffic back on the primary: %.1fs by the route", r.RollbackTime().Seconds())
		if !r.ServedFirst.IsZero() {
			s += fmt.Sprintf(", %.0fs by the canary's scrapes (%.0fs → %.0fs, ±5s)", r.ServedTime().Seconds(),
				r.ServedFirst.Sub(r.Applied).Seconds(), r.ServedLast.Sub(r.Applied).Seconds())
		}
	}
	return s
}

// Apply patches the service's Deployment with the release: its name on
// the pod template and its environment on the service's container.
func Apply(ctx context.Context, client *cluster.Client, namespace string, r Release) error {
	raw, err := json.Marshal(releasePatch(r))
	if err != nil {
		return err
	}
	_, err = client.Typed.AppsV1().Deployments(namespace).Patch(ctx, r.Service, types.StrategicMergePatchType, raw, metav1.PatchOptions{FieldManager: "darktower-canary"})
	if err != nil {
		return fmt.Errorf("releasing %s to %s: %w", r.Name, r.Service, err)
	}
	return nil
}

// releasePatch is the strategic merge patch of a workload's pod template
// that makes the release: its name, its image, environment and CPU
// request on the container named after the service.
func releasePatch(r Release) map[string]any {
	env := make([]map[string]string, 0, len(r.Env))
	keys := make([]string, 0, len(r.Env))
	for k := range r.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, map[string]string{"name": k, "value": r.Env[k]})
	}
	container := map[string]any{"name": r.Service, "env": env}
	if r.Image != "" {
		container["image"] = r.Image
	}
	if r.CPURequest != "" {
		container["resources"] = map[string]any{"requests": map[string]string{"cpu": r.CPURequest}}
	}
	return map[string]any{"spec": map[string]any{"template": map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{ReleaseAnnotation: r.Name}},
		"spec":     map[string]any{"containers": []map[string]any{container}},
	}}}
}

// Run applies the release and watches Flagger analyse it to the end.
// A rollback is a Result (Outcome.Phase Failed), not an error: the error
// is for a release that could not be applied or watched.
func Run(ctx context.Context, client *cluster.Client, namespace string, r Release, timeout time.Duration, progress io.Writer) (*Result, error) {
	res := &Result{Release: r, Applied: time.Now()}
	upstream.Say(progress, "canary %s: releasing %s (%s)", r.Service, r.Name, envString(r.Env))
	if err := Apply(ctx, client, namespace, r); err != nil {
		return nil, err
	}
	out, err := Watch(ctx, WatchOptions{Client: client, Namespace: namespace, Name: r.Service, AwaitStart: true, Timeout: timeout, Progress: progress})
	res.Outcome = out
	if _, rolledBack := err.(*RolledBackError); err != nil && !rolledBack {
		return res, err
	}
	var last int64
	for _, o := range out.Timeline {
		if o.RouteCanary > 0 && o.RouteCanary != last {
			res.Weights = append(res.Weights, o.RouteCanary)
		}
		if o.RouteCanary > 0 && res.FirstTraffic.IsZero() {
			res.FirstTraffic = o.At
		}
		if o.RouteCanary == 0 && !res.FirstTraffic.IsZero() && res.TrafficBack.IsZero() {
			res.TrafficBack = o.At
		}
		if o.RouteCanary >= 0 {
			last = o.RouteCanary
		}
	}
	res.ServedFirst, res.ServedLast, err = servedWindow(ctx, client, namespace, r.Service+deploymentPods, r.Routes, res.Applied, time.Time{})
	if err != nil {
		upstream.Say(progress, "canary %s: when the canary served, from Prometheus: %v", r.Service, err)
	}
	upstream.Say(progress, "canary: %s", res.Summary())
	return res, nil
}

// ServedTime is from the first to the last scrape that saw the canary
// serve (0 when it served in none, or in one).
func (r *Result) ServedTime() time.Duration {
	if r.ServedFirst.IsZero() {
		return 0
	}
	return r.ServedLast.Sub(r.ServedFirst)
}

// servedWindow reads, from the request totals of the canary's pods (a
// regexp of their names) since a time, the first and last scrape at
// which one had grown over a scrape interval wholly after it (the
// previous release's canary pods, still terminating, served before it),
// and, if until is set, that ended by it (a StatefulSet's pod comes back
// under its name at the previous revision).
func servedWindow(ctx context.Context, client *cluster.Client, namespace, pods string, routes []string, since, until time.Time) (first, last time.Time, err error) {
	route := ".*"
	if len(routes) > 0 {
		quoted := make([]string, len(routes))
		for i, r := range routes {
			quoted[i] = regexp.QuoteMeta(r)
		}
		route = strings.Join(quoted, "|")
	}
	return counterGrew(ctx, client, fmt.Sprintf(`http_requests_total{namespace=%q, pod=~%q, listener="api", route=~%q}`,
		namespace, pods, route), since, until)
}

// counterGrew is when the counters a series selector names first and last
// grew, by their scrapes after since (and, unless zero, up to until).
func counterGrew(ctx context.Context, client *cluster.Client, selector string, since, until time.Time) (first, last time.Time, err error) {
	series, err := deploy.PrometheusSamples(ctx, client, selector, time.Since(since)+10*time.Second)
	if err != nil {
		return first, last, err
	}
	for _, s := range series {
		for i := range s.Samples {
			grew := false
			if i == 0 {
				// A pod's series starts at zero (opskit): a first sample
				// above it, taken after the release, counted requests the
				// new pod served before its first scrape.
				grew = !s.Samples[0].Time.Before(since) && s.Samples[0].Value > 0
			} else {
				grew = !s.Samples[i-1].Time.Before(since) && s.Samples[i].Value > s.Samples[i-1].Value
			}
			if !grew || (!until.IsZero() && s.Samples[i].Time.After(until)) {
				continue
			}
			if t := s.Samples[i].Time; first.IsZero() || t.Before(first) {
				first = t
			}
			if t := s.Samples[i].Time; t.After(last) {
				last = t
			}
		}
	}
	return first, last, nil
}

func envString(env map[string]string) string {
	if len(env) == 0 {
		return "no environment change"
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + env[k]
	}
	return strings.Join(parts, " ")
}
