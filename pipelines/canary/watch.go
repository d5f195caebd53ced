package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/upstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Flagger's Canary phases (pkg/apis/flagger/v1beta1/status.go).
const (
	PhaseInitializing     = "Initializing"
	PhaseInitialized      = "Initialized"
	PhaseWaiting          = "Waiting"
	PhaseProgressing      = "Progressing"
	PhaseWaitingPromotion = "WaitingPromotion"
	PhasePromoting        = "Promoting"
	PhaseFinalising       = "Finalising"
	PhaseSucceeded        = "Succeeded"
	PhaseFailed           = "Failed"
)

var (
	canaryGVR    = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}
	httpRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
)

// State is a Canary as Flagger reports it, with the weights its HTTPRoute
// really carries (the traffic, as opposed to Flagger's intent).
type State struct {
	Phase         string
	CanaryWeight  int64 // status.canaryWeight
	FailedChecks  int64
	Iterations    int64
	RoutePrimary  int64 // the HTTPRoute's primary backend weight (-1: no route yet)
	RouteCanary   int64
	StatusMessage string // the Promoted condition's message
}

func (s State) String() string {
	route := "no route"
	if s.RoutePrimary >= 0 {
		route = fmt.Sprintf("route %d/%d", s.RoutePrimary, s.RouteCanary)
	}
	return fmt.Sprintf("%-16s weight %3d  %s  failed checks %d", s.Phase, s.CanaryWeight, route, s.FailedChecks)
}

// Observation is a State seen at a time.
type Observation struct {
	At time.Time
	State
}

// Outcome is how a watched analysis ended.
type Outcome struct {
	Name     string
	Phase    string // Succeeded or Failed
	Reason   string // for Failed: Flagger's last word on why (the failing metric)
	Timeline []Observation
	Events   []string // Flagger's events on the Canary, in order
}

// Promoted says whether the release reached production.
func (o *Outcome) Promoted() bool { return o.Phase == PhaseSucceeded }

// RolledBackError is a watched analysis that failed: Flagger sent all
// traffic back to the primary.
type RolledBackError struct {
	Canary string
	Reason string
}

func (e *RolledBackError) Error() string {
	return fmt.Sprintf("canary %s rolled back: %s", e.Canary, e.Reason)
}

// WatchOptions say which Canary to follow.
type WatchOptions struct {
	Client    *cluster.Client
	Namespace string
	Name      string
	// AwaitStart ignores a finished analysis (Succeeded, Failed,
	// Initialized) until a new one has started: for a watch begun right
	// after a release was applied, before Flagger has noticed it.
	AwaitStart bool
	Timeout    time.Duration // default 15 min
	Poll       time.Duration // default 500 ms
	// FlaggerNamespace is where Flagger runs (default FlaggerNamespace):
	// its log says every check's outcome, where Kubernetes drops repeated
	// Events (its recorder's spam filter keeps ~25 per object).
	FlaggerNamespace string
	Progress         io.Writer
}

// Watch follows a Canary until its analysis ends, printing each change of
// phase, weight or failed checks and each of Flagger's events. It returns
// the outcome and, when the canary was rolled back, a *RolledBackError
// naming Flagger's reason.
func Watch(ctx context.Context, o WatchOptions) (*Outcome, error) {
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.FlaggerNamespace == "" {
		o.FlaggerNamespace = FlaggerNamespace
	}
	out := &Outcome{Name: o.Name}
	started := !o.AwaitStart
	since := metav1.NewTime(time.Now().Add(-time.Second))
	seenEvents := map[string]bool{}
	// Events from before the watch are history, not this analysis.
	if evs, err := canaryEvents(ctx, o.Client, o.Namespace, o.Name); err == nil {
		for _, e := range evs {
			seenEvents[eventKey(e)] = true
		}
	}
	// Flagger's log is read where Flagger is found; else its Events.
	fromLog := flaggerPods(ctx, o.Client, o.FlaggerNamespace) != nil
	subject := o.Name + "." + o.Namespace
	polls := 0
	var last *State
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		s, err := Read(ctx, o.Client, o.Namespace, o.Name)
		if err != nil {
			return out, err
		}
		now := time.Now()
		if last == nil || *s != *last {
			out.Timeline = append(out.Timeline, Observation{At: now, State: *s})
			upstream.Say(o.Progress, "canary %s: %s", o.Name, s)
			last = s
		}
		terminal := s.Phase == PhaseSucceeded || s.Phase == PhaseFailed || s.Phase == PhaseInitialized
		if polls++; fromLog && (polls%4 == 0 || terminal) {
			for _, l := range flaggerLog(ctx, o.Client, o.FlaggerNamespace, subject, since) {
				// Read on from the last line seen, not the whole log again
				// (the same second's lines come back; seenEvents drops them).
				if ts, err := time.Parse(time.RFC3339Nano, l.TS); err == nil && ts.After(since.Time) {
					since = metav1.NewTime(ts.Truncate(time.Second))
				}
				if k := l.TS + l.Msg; !seenEvents[k] {
					seenEvents[k] = true
					out.Events = append(out.Events, l.Msg)
					upstream.Say(o.Progress, "canary %s: flagger: %s", o.Name, l.Msg)
				}
			}
		} else if !fromLog {
			if evs, err := canaryEvents(ctx, o.Client, o.Namespace, o.Name); err == nil {
				for _, e := range evs {
					if k := eventKey(e); !seenEvents[k] {
						seenEvents[k] = true
						out.Events = append(out.Events, e.Message)
						upstream.Say(o.Progress, "canary %s: event: %s", o.Name, e.Message)
					}
				}
			}
		}
		switch s.Phase {
		case PhaseSucceeded, PhaseFailed, PhaseInitialized:
			if started {
				out.Phase = s.Phase
				if s.Phase == PhaseInitialized {
					out.Phase = PhaseSucceeded // nothing to analyse: what runs is the primary
				}
				if s.Phase == PhaseFailed {
					out.Reason = failureReason(out.Events, s.StatusMessage)
					return out, &RolledBackError{Canary: o.Name, Reason: out.Reason}
				}
				return out, nil
			}
		case "":
		default:
			started = true
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return out, fmt.Errorf("canary %s: still %s after %s (waiting for a release to start: %v)", o.Name, s.Phase, o.Timeout, !started)
			}
			return out, ctx.Err()
		case <-t.C:
		}
	}
}

// WaitPhase waits until the Canary is in one of phases.
func WaitPhase(ctx context.Context, client *cluster.Client, namespace, name string, within time.Duration, phases ...string) (*State, error) {
	deadline := time.Now().Add(within)
	var s *State
	var err error
	for {
		s, err = Read(ctx, client, namespace, name)
		if err == nil {
			for _, p := range phases {
				if s.Phase == p {
					return s, nil
				}
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			msg := s.StatusMessage
			if evs, _ := canaryEvents(ctx, client, namespace, name); len(evs) > 0 {
				msg = evs[len(evs)-1].Message
			}
			return s, fmt.Errorf("canary %s/%s: %q after %s, want %s (%s)", namespace, name, s.Phase, within, strings.Join(phases, " or "), msg)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Read is the Canary's state now.
func Read(ctx context.Context, client *cluster.Client, namespace, name string) (*State, error) {
	u, err := client.Dynamic().Resource(canaryGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no Canary %s in namespace %s (canary install puts them in)", name, namespace)
	}
	if err != nil {
		return nil, err
	}
	s := &State{RoutePrimary: -1, RouteCanary: -1}
	s.Phase, _, _ = unstructured.NestedString(u.Object, "status", "phase")
	s.CanaryWeight, _, _ = unstructured.NestedInt64(u.Object, "status", "canaryWeight")
	s.FailedChecks, _, _ = unstructured.NestedInt64(u.Object, "status", "failedChecks")
	s.Iterations, _, _ = unstructured.NestedInt64(u.Object, "status", "iterations")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Promoted" {
			s.StatusMessage, _ = m["message"].(string)
		}
	}
	svc, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
	if svc == "" {
		svc = name
	}
	route, err := client.Dynamic().Resource(httpRouteGVR).Namespace(namespace).Get(ctx, svc, metav1.GetOptions{})
	if err == nil {
		s.RoutePrimary, s.RouteCanary = routeWeights(route, svc)
	}
	return s, nil
}

// routeWeights sums the HTTPRoute's backend weights of the primary and the
// canary Service over its rules.
func routeWeights(route *unstructured.Unstructured, svc string) (primary, canary int64) {
	rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
	for _, r := range rules {
		rm, _ := r.(map[string]any)
		refs, _, _ := unstructured.NestedSlice(rm, "backendRefs")
		for _, b := range refs {
			bm, _ := b.(map[string]any)
			name, _ := bm["name"].(string)
			w, ok, _ := unstructured.NestedInt64(bm, "weight")
			if !ok {
				w = 1
			}
			switch name {
			case svc + "-primary":
				primary += w
			case svc + "-canary":
				canary += w
			}
		}
		break // every rule carries the same split; the first says it
	}
	return primary, canary
}

func canaryEvents(ctx context.Context, client *cluster.Client, namespace, name string) ([]corev1.Event, error) {
	list, err := client.Typed.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Canary,involvedObject.name=" + name})
	if err != nil {
		return nil, err
	}
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool { return eventTime(evs[i]).Before(eventTime(evs[j])) })
	return evs, nil
}

func eventTime(e corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	if e.EventTime.Time.IsZero() {
		return e.CreationTimestamp.Time
	}
	return e.EventTime.Time
}

// eventKey tells a new event from one already printed (Flagger repeats a
// message by raising the count of the same Event).
func eventKey(e corev1.Event) string {
	return fmt.Sprintf("%s/%d", e.Name, e.Count)
}

// failureReason is the most telling of Flagger's events for a rollback:
// its last "Halt advancement" (which names the failing metric and value),
// else its last event, else the status condition.
func failureReason(events []string, status string) string {
	for i := len(events) - 1; i >= 0; i-- {
		if strings.Contains(events[i], "Halt") && !strings.Contains(events[i], "Canary failed") {
			return events[i]
		}
	}
	if len(events) > 0 {
		return events[len(events)-1]
	}
	if status != "" {
		return status
	}
	return "Flagger gave no reason"
}

// flaggerLine is one line of Flagger's JSON log about a canary.
type flaggerLine struct {
	TS     string `json:"ts"`
	Msg    string `json:"msg"`
	Canary string `json:"canary"`
}

// flaggerPods are Flagger's pods in namespace (this pipeline's label, or
// the upstream chart's app=flagger); nil when there are none.
func flaggerPods(ctx context.Context, client *cluster.Client, namespace string) []corev1.Pod {
	for _, sel := range []string{"app.kubernetes.io/name=flagger", "app=flagger"} {
		pods, err := client.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil && len(pods.Items) > 0 {
			return pods.Items
		}
	}
	return nil
}

// flaggerLog is what Flagger logged about canary (name.namespace) since.
func flaggerLog(ctx context.Context, client *cluster.Client, namespace, canary string, since metav1.Time) []flaggerLine {
	var out []flaggerLine
	for _, p := range flaggerPods(ctx, client, namespace) {
		raw, err := client.Typed.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{SinceTime: &since}).DoRaw(ctx)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			var l flaggerLine
			if json.Unmarshal([]byte(line), &l) == nil && l.Canary == canary && l.Msg != "" {
				out = append(out, l)
			}
		}
	}
	return out
}
