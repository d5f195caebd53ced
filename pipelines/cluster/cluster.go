// Package cluster is the pipeline's Kubernetes client side, written once
// for every cluster it deploys to (the simulated one, kind previews,
// production): server-side apply of rendered objects, rollout waits with
// useful timeout messages, not-ready reporting and deletion by label.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// FieldManager owns the fields the pipeline applies.
const FieldManager = "darktower"

// Client talks to one cluster.
type Client struct {
	Typed    kubernetes.Interface
	dynamic  dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	warnings *warnings
}

// warnings collects what the API server says while admitting (e.g. Pod
// Security "would violate"), for the object being applied.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// New builds a client from a REST config.
func New(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	// client-go's default (5 requests/s) makes applying an overlay take
	// seconds per dozen objects; the pipeline is one well-behaved client.
	cfg.QPS, cfg.Burst = 50, 100
	w := &warnings{}
	cfg.WarningHandlerWithContext = w
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Typed: typed, dynamic: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), warnings: w}, nil
}

// Dynamic is the client for objects without Go types here (Flagger's
// Canaries, Gateway API routes).
func (c *Client) Dynamic() dynamic.Interface { return c.dynamic }

// Result is what the server said about one object.
type Result struct {
	Object   string // Kind namespace/name
	Err      error
	Warnings []string // admitted, with these warnings
}

// ParseObjects decodes a YAML document (one object) into unstructured form.
func ParseObjects(docs [][]byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// SplitYAML splits a multi-document YAML stream at its "---" lines,
// dropping empty documents.
func SplitYAML(stream []byte) [][]byte {
	var out [][]byte
	for _, d := range strings.Split("\n"+string(stream), "\n---") {
		if strings.TrimSpace(d) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// ID names an object in reports.
func ID(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// Apply server-side applies each object (dry-run when asked), CRDs and
// namespaces first so what depends on them can be admitted; it returns a
// result per object instead of stopping at the first refusal.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured, dryRun bool) []Result {
	ordered := append([]*unstructured.Unstructured(nil), objs...)
	sort.SliceStable(ordered, func(i, j int) bool { return rank(ordered[i]) < rank(ordered[j]) })
	var out []Result
	for _, o := range ordered {
		c.warnings.take()
		err := c.applyOne(ctx, o, dryRun)
		out = append(out, Result{Object: ID(o), Err: err, Warnings: c.warnings.take()})
		if rank(o) == 0 && !dryRun {
			c.mapper.Reset() // new CRDs: learn their resources
		}
	}
	return out
}

func rank(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	default:
		return 2
	}
}

func (c *Client) applyOne(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		c.mapper.Reset()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return &NotServedError{GVK: gvk.String()}
		}
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri dynamic.ResourceInterface = c.dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		ri = c.dynamic.Resource(m.Resource).Namespace(ns)
	}
	_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts)
	return err
}

// NotServedError: the cluster has no resource for an object's kind (a
// CRD that is not installed).
type NotServedError struct{ GVK string }

func (e *NotServedError) Error() string {
	return fmt.Sprintf("the cluster does not serve %s (is its CRD installed?)", e.GVK)
}

// Workload is a Deployment or StatefulSet to wait for.
type Workload struct {
	Kind, Namespace, Name string
}

func (w Workload) String() string { return w.Kind + " " + w.Namespace + "/" + w.Name }

// rollout is a workload's progress.
type rollout struct {
	ready, want int32
	done        bool     // the controller has acted on the latest spec
	problems    []string // failure conditions the controllers reported
	selector    *metav1.LabelSelector
}

func (c *Client) rollout(ctx context.Context, w Workload) (rollout, error) {
	switch w.Kind {
	case "Deployment":
		d, err := c.Typed.AppsV1().Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return rollout{}, err
		}
		r := rollout{ready: d.Status.ReadyReplicas, want: 1, selector: d.Spec.Selector}
		if d.Spec.Replicas != nil {
			r.want = *d.Spec.Replicas
		}
		r.done = d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas >= r.want
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentReplicaFailure && cond.Status == corev1.ConditionTrue {
				r.problems = append(r.problems, cond.Message)
			}
		}
		return r, nil
	case "StatefulSet":
		s, err := c.Typed.AppsV1().StatefulSets(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return rollout{}, err
		}
		r := rollout{ready: s.Status.ReadyReplicas, want: 1, selector: s.Spec.Selector}
		if s.Spec.Replicas != nil {
			r.want = *s.Spec.Replicas
		}
		r.done = s.Status.ObservedGeneration >= s.Generation && s.Status.UpdatedReplicas >= r.want
		return r, nil
	}
	return rollout{}, fmt.Errorf("%s: not a Deployment or StatefulSet", w)
}

// WaitReady waits until every workload has all its replicas Ready; on
// timeout it names each workload that is not, with the controllers' and
// the pods' reasons.
func (c *Client) WaitReady(ctx context.Context, ws []Workload, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var waiting []string
		for _, w := range ws {
			r, err := c.rollout(ctx, w)
			if err != nil {
				waiting = append(waiting, fmt.Sprintf("%s: %v", w, err))
				continue
			}
			if r.done && r.ready >= r.want {
				continue
			}
			why := r.problems
			if r.selector != nil {
				if reasons, err := c.NotReadyPods(ctx, w.Namespace, metav1.FormatLabelSelector(r.selector)); err == nil {
					why = append(why, reasons...)
				}
			}
			line := fmt.Sprintf("%s: %d/%d ready", w, r.ready, r.want)
			if !r.done {
				line += ", rollout in progress"
			}
			if len(why) > 0 {
				line += " (" + strings.Join(why, "; ") + ")"
			}
			waiting = append(waiting, line)
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s:\n  %s", within, strings.Join(waiting, "\n  "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// NotReadyPods lists the pods matching selector that are not Ready, each
// with the reason the cluster gives (scheduling, container state, ...).
func (c *Client) NotReadyPods(ctx context.Context, namespace, selector string) ([]string, error) {
	pods, err := c.Typed.CoreV1().Pods(namespace).List(ctx, listOpts(selector))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range pods.Items {
		// A pod that ran to completion (a check such as the preview's smoke
		// pod) is done, not unready.
		if podReady(&p) || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		reason := string(p.Status.Phase)
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				reason = fmt.Sprintf("%s: %s", cond.Type, cond.Message)
				break
			}
		}
		out = append(out, p.Name+" "+reason)
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// DeleteOnePod deletes one Ready pod of a workload's selector and returns
// its name (what a pod-delete chaos experiment does). grace is the
// termination grace period (nil: the pod's own).
func (c *Client) DeleteOnePod(ctx context.Context, namespace, selector string, grace *int64) (string, error) {
	pods, err := c.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if podReady(&p) && p.DeletionTimestamp == nil {
			return p.Name, c.Typed.CoreV1().Pods(namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace})
		}
	}
	return "", fmt.Errorf("no Ready pod matches %s in %s", selector, namespace)
}

// DeleteByLabel deletes every pod matching selector ("" for all) with the
// given grace period (nil: each pod's own).
func (c *Client) DeleteByLabel(ctx context.Context, namespace, selector string, grace *int64) error {
	return c.Typed.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: grace}, listOpts(selector))
}

// RemoveNamespaces deletes namespaces and waits until they are gone. The
// workload controllers go first, orphaning their pods so none is
// recreated, then the pods without grace: the namespace controller
// otherwise waits out the pods' termination grace (30 s here) before it
// finishes. For test clusters and previews, not for production.
func (c *Client) RemoveNamespaces(ctx context.Context, names []string, within time.Duration) error {
	orphan := metav1.DeletePropagationOrphan
	var zero int64
	byOrphaning := metav1.DeleteOptions{PropagationPolicy: &orphan}
	for _, ns := range names {
		apps := c.Typed.AppsV1()
		for _, del := range []func() error{
			func() error { return apps.Deployments(ns).DeleteCollection(ctx, byOrphaning, metav1.ListOptions{}) },
			func() error { return apps.StatefulSets(ns).DeleteCollection(ctx, byOrphaning, metav1.ListOptions{}) },
			func() error { return apps.ReplicaSets(ns).DeleteCollection(ctx, byOrphaning, metav1.ListOptions{}) },
			func() error { return c.DeleteByLabel(ctx, ns, "", &zero) },
			func() error { return c.Typed.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}) },
		} {
			if err := del(); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("removing namespace %s: %w", ns, err)
			}
		}
	}
	deadline := time.Now().Add(within)
	for _, ns := range names {
		for {
			got, err := c.Typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				why := "it still exists"
				if err == nil {
					for _, cond := range got.Status.Conditions {
						if cond.Status == corev1.ConditionTrue {
							why += "; " + cond.Message
						}
					}
				}
				return fmt.Errorf("namespace %s was not removed within %s: %s", ns, within, why)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// Selector of a workload, for the helpers above.
func (c *Client) Selector(ctx context.Context, w Workload) (string, error) {
	r, err := c.rollout(ctx, w)
	if err != nil {
		return "", err
	}
	return metav1.FormatLabelSelector(r.selector), nil
}

func listOpts(selector string) metav1.ListOptions { return metav1.ListOptions{LabelSelector: selector} }
