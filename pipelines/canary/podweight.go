package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/upstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// media-handler's media is UDP, which no HTTP route can weight, and a
// session must stay on one media-handler for its life. Its releases are
// weighted by pods instead: the release runs as a second Deployment,
// <name>-canary, beside the service's own; its pods register with
// meeting-controller like any media-handler, and meeting-controller's
// placement gives them their share of new sessions (one canary pod of
// three: a third). Each step (a number of canary pods) is judged by the
// service's own suspended Canary's analysis (media loss and forwarding
// latency, canary pods against the others); promotion rolls the release
// out to the service's Deployment and removes the canary; rollback
// removes the canary, whose sessions move to the others as their clients
// rejoin.

// TrackLabel marks the pods of a pod-weighted canary (value "canary").
const TrackLabel = "darktower.io/track"

// CanaryOfAnnotation names the Deployment a canary Deployment releases to.
const CanaryOfAnnotation = "darktower.io/canary-of"

// CanaryDeploymentName is the Deployment of service's pod-weighted canary.
func CanaryDeploymentName(service string) string { return service + "-canary" }

// weightedPods are the analysis's two sides for a pod-weighted canary:
// the canary Deployment's pods (<name>-canary-<hash>-<id>) against the
// service's own (<name>-<hash>-<id>, which the first cannot match: a
// pod-template hash has no '-').
func weightedPods(service string) Pods {
	return Pods{Canary: CanaryDeploymentName(service) + deploymentPods, Baseline: service + deploymentPods}
}

// CanaryDeployment is the release's Deployment beside stable: stable's
// spec with the release applied to its pod template (releasePatch, as
// Apply would), replicas pods, and its own name label
// (app.kubernetes.io/name=<name>-canary) so that neither Deployment's
// selector matches the other's pods. Every other label is kept: the
// Service, NetworkPolicies, PodDisruptionBudget and the ServiceMonitor's
// endpoints select by app.kubernetes.io/part-of and component, and so
// cover the canary's pods as they cover Flagger's primaries.
func CanaryDeployment(stable *appsv1.Deployment, r Release, replicas int32) (*appsv1.Deployment, error) {
	if r.Service != stable.Name {
		return nil, fmt.Errorf("a release of %s cannot go to Deployment %s", r.Service, stable.Name)
	}
	name := CanaryDeploymentName(stable.Name)
	original, err := json.Marshal(stable.Spec.Template)
	if err != nil {
		return nil, err
	}
	patch, err := json.Marshal(releasePatch(r)["spec"].(map[string]any)["template"])
	if err != nil {
		return nil, err
	}
	merged, err := strategicpatch.StrategicMergePatch(original, patch, corev1.PodTemplateSpec{})
	if err != nil {
		return nil, fmt.Errorf("the release's pod template for %s: %w", name, err)
	}
	var template corev1.PodTemplateSpec
	if err := json.Unmarshal(merged, &template); err != nil {
		return nil, err
	}
	if len(template.Spec.Containers) != len(stable.Spec.Template.Spec.Containers) {
		return nil, fmt.Errorf("Deployment %s has no container named %s to release to", stable.Name, stable.Name)
	}
	template.Labels = maps.Clone(template.Labels)
	if template.Labels == nil {
		template.Labels = map[string]string{}
	}
	template.Labels["app.kubernetes.io/name"] = name
	template.Labels[TrackLabel] = "canary"
	labels := maps.Clone(stable.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["app.kubernetes.io/name"] = name
	labels[TrackLabel] = "canary"
	spec := *stable.Spec.DeepCopy()
	spec.Replicas = &replicas
	spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": name, TrackLabel: "canary"}}
	spec.Template = template
	spec.Paused = false
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: stable.Namespace, Labels: labels,
		Annotations: map[string]string{CanaryOfAnnotation: stable.Name, ReleaseAnnotation: r.Name}}, Spec: spec}
	d.APIVersion, d.Kind = "apps/v1", "Deployment"
	return d, nil
}

// RollDeployment releases o.Release to a Deployment as a pod-weighted
// canary: o.Steps canary pods in turn (default one), each step judged by
// o.Analysis, then promotion (the release rolled out to the Deployment
// itself, the canary removed) or rollback (the canary removed). A
// rollback is a RollResult with Promoted false, not an error.
func RollDeployment(ctx context.Context, o RollOptions) (*RollResult, error) {
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	name, ns, a := o.Release.Service, o.Namespace, o.Analysis
	if a == nil {
		return nil, fmt.Errorf("rolling %s: no analysis (ReadAnalysis of a Canary)", name)
	}
	steps := o.Steps
	if len(steps) == 0 {
		steps = []int32{1}
	}
	for i, k := range steps {
		if k < 1 || (i > 0 && k <= steps[i-1]) {
			return nil, fmt.Errorf("rolling %s: steps %v: want canary pod counts of 1 or more, each above the one before (e.g. 1,2)", name, steps)
		}
	}
	// The Canary whose analysis runs must be one Flagger leaves alone, of
	// this Deployment: otherwise Flagger releases it too (a second,
	// unjudged rollout beside the pipeline's).
	if !a.Suspended || a.Target != name {
		return nil, fmt.Errorf("rolling %s: Canary %s (target %q, suspend %v) is not a suspended Canary of %s: Flagger runs that one; canary roll runs the analysis of a Deployment's own suspended Canary (media-handler's)",
			name, a.From, a.Target, a.Suspended, name)
	}
	say := func(format string, args ...any) { upstream.Say(o.Progress, "canary "+name+": "+format, args...) }
	stable, err := o.Client.Typed.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("rolling %s: %w", name, err)
	}
	n := int32(1)
	if stable.Spec.Replicas != nil {
		n = *stable.Spec.Replicas
	}
	// A cluster where Flagger ran the Canary before it was suspended:
	// Flagger's primary serves and the Deployment is scaled to 0.
	if _, err := o.Client.Typed.AppsV1().Deployments(ns).Get(ctx, name+"-primary", metav1.GetOptions{}); err == nil || n < 1 {
		return nil, fmt.Errorf("rolling %s: Deployment %s-primary exists or %s has %d replicas: Flagger ran %s's Canary before it was suspended; delete that Canary with spec.revertOnDeletion: true (Flagger then scales %s back up and removes its primary) and apply it suspended",
			name, name, name, n, name, name)
	}
	// Held (a Deployment paused by hand; the overlays do not pause one: a
	// paused Deployment never starts on a new cluster): the release was
	// applied to the paused Deployment, whose pods still run the previous
	// template.
	var previous *corev1.PodTemplateSpec
	if o.Release.held() {
		if !stable.Spec.Paused {
			return nil, fmt.Errorf("rolling %s: no release given and none held: Deployment %s is not paused (give the release, e.g. --image REF, or apply it with the Deployment paused)", name, name)
		}
		if previous, err = runningTemplate(ctx, o, stable); err != nil {
			return nil, fmt.Errorf("rolling %s: %w", name, err)
		}
		o.Release.Name = stable.Spec.Template.Annotations[ReleaseAnnotation]
		if o.Release.Name == "" {
			o.Release.Name = "held"
		}
	}
	if previous == nil && stable.Spec.Paused {
		// A release given while another is held would be judged against
		// the running pods but built on the held template.
		if _, err := runningTemplate(ctx, o, stable); err == nil {
			return nil, fmt.Errorf("rolling %s: the paused Deployment holds a release already (its template differs from its pods'): roll that one (no --image), or put the running template back first", name)
		}
	}
	canaryName := CanaryDeploymentName(name)
	if _, err := o.Client.Typed.AppsV1().Deployments(ns).Get(ctx, canaryName, metav1.GetOptions{}); err == nil {
		return nil, fmt.Errorf("rolling %s: a canary is under way (Deployment %s/%s): let it finish, or delete it to roll it back", name, ns, canaryName)
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("rolling %s: %w", name, err)
	}
	pods := weightedPods(name)
	if err := a.Validate(ns, name, pods); err != nil {
		return nil, fmt.Errorf("rolling %s with the analysis of Canary %s: %w", name, a.From, err)
	}
	d, err := CanaryDeployment(stable, o.Release, steps[0])
	if err != nil {
		return nil, fmt.Errorf("rolling %s: %w", name, err)
	}
	what := envString(o.Release.Env)
	if previous != nil {
		what = "the template held by the paused Deployment"
	}
	say("releasing %s (%s) as %d pod(s) of Deployment %s beside %d of %s; analysis of Canary %s: a check every %s, rollback at %d failed",
		o.Release.Name, what, steps[0], canaryName, n, name, a.From, a.Interval, a.Threshold)
	res := &RollResult{Release: o.Release, Replicas: n, Applied: time.Now(), weighted: true, heldPrevious: previous}
	// The pre-rollout hooks before the canary exists, as Flagger calls
	// them before it routes any traffic to one: on a preview they start
	// the load, whose sessions then have the canary's start-up to settle.
	failed := 0
	if why, err := preRollout(ctx, o, &failed, say); err != nil {
		return nil, fmt.Errorf("rolling %s: %w", name, err)
	} else if why != "" {
		res.Reason, res.Done = why, time.Now()
		a.postRollout(ctx, o.Client, ns, name, PhaseFailed, say)
		say("rolled back before any canary pod ran: %s", why)
		return res, nil
	}
	if _, err := o.Client.Typed.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{FieldManager: "darktower-canary"}); err != nil {
		return nil, fmt.Errorf("rolling %s: creating %s: %w", name, canaryName, err)
	}
	// From here the release may serve: a failure to follow it (an API
	// error, a cancelled run) removes the canary rather than leave it.
	err = rollWeighted(ctx, o, res, steps, pods, failed, stable.Spec.Template.DeepCopy(), say)
	if err == nil {
		return res, nil
	}
	if res.Reason != "" || res.promoting {
		// The rollback itself failed, or the promotion did (it put the
		// previous template back itself, or says why it could not).
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Deadline)
	defer cancel()
	if res.Promoted {
		// Promoted: only the canary is left to remove.
		if rerr := deleteCanary(rctx, o); rerr != nil {
			return nil, fmt.Errorf("%w; %s is promoted, but removing the canary %s failed: %v", err, name, canaryName, rerr)
		}
		return nil, fmt.Errorf("%w (%s is promoted; the canary %s was removed)", err, name, canaryName)
	}
	// Interrupted before judging was done: the canary goes; a held release
	// stays held (it was not judged), and a release given with --image was
	// never applied to the Deployment.
	res.heldPrevious = nil
	if rerr := removeCanary(rctx, o, res, "interrupted: "+err.Error(), say); rerr != nil {
		return nil, fmt.Errorf("%w; and removing the canary %s failed: %v", err, canaryName, rerr)
	}
	return nil, fmt.Errorf("%w (the canary %s was removed)", err, canaryName)
}

// rollWeighted runs the steps, then promotes, or rolls back at the
// threshold (failed: the checks failed so far, by the pre-rollout hooks).
func rollWeighted(ctx context.Context, o RollOptions, res *RollResult, steps []int32, pods Pods, failed int, running *corev1.PodTemplateSpec, say func(string, ...any)) error {
	name, a := o.Release.Service, o.Analysis
	canaryName := CanaryDeploymentName(name)
	for i, k := range steps {
		if i > 0 {
			raw, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": k}})
			if err := patchDeployment(ctx, o, canaryName, raw); err != nil {
				return err
			}
		}
		step := RollStep{Updated: k, Of: res.Replicas + k}
		ready, err := waitDeployment(ctx, o, canaryName, a.Deadline, res.sawTraffic)
		if err != nil {
			return err
		}
		if ready.IsZero() {
			res.Steps = append(res.Steps, step)
			return removeCanary(ctx, o, res, fmt.Sprintf("the canary's pods were not ready within %s (progressDeadlineSeconds)", a.Deadline), say)
		}
		step.Ready = ready
		say("%d canary pod(s) beside %d, ready", k, res.Replicas)
		why, err := judgeStep(ctx, o, &step, pods, &failed, fmt.Sprintf("%d canary pod(s)", k), say)
		res.Steps = append(res.Steps, step)
		if err != nil {
			return err
		}
		if why != "" {
			return removeCanary(ctx, o, res, why, say)
		}
	}
	return promoteWeighted(ctx, o, res, running, say)
}

// promoteWeighted rolls the judged release out to the Deployment itself
// (its own rolling update; a paused one is
// resumed until its pods are at the release, then paused again), then
// removes the canary. A promotion that does not complete puts the
// running template back (rolled out the same way) and reports a
// rollback: no pod is left at a release that was not promoted.
func promoteWeighted(ctx context.Context, o RollOptions, res *RollResult, running *corev1.PodTemplateSpec, say func(string, ...any)) error {
	name, ns, a := o.Release.Service, o.Namespace, o.Analysis
	if res.heldPrevious != nil {
		running = res.heldPrevious
	}
	res.promoting = true
	ready, err := rollOutTemplate(ctx, o, func() error {
		if res.heldPrevious != nil {
			return nil // the held template is the release
		}
		return Apply(ctx, o.Client, ns, o.Release)
	})
	if err != nil || ready.IsZero() {
		why := fmt.Sprintf("promotion: %s's pods were not all at the release and ready within %s", name, a.Deadline)
		if err != nil {
			why = "promotion: " + err.Error()
		}
		res.Reason = why
		say("rolling back: %s; putting the running template back", why)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Deadline)
		defer cancel()
		back, rerr := rollOutTemplate(rctx, o, func() error { return replaceTemplate(rctx, o, running) })
		if rerr == nil && back.IsZero() {
			rerr = fmt.Errorf("its pods were not back at the running template within %s", a.Deadline)
		}
		if rerr != nil {
			return fmt.Errorf("rolling %s back after a failed promotion (%s): %w", name, why, rerr)
		}
		res.heldPrevious = nil // put back already
		if rerr := removeCanary(rctx, o, res, why+" (the running template was put back)", say); rerr != nil {
			return rerr
		}
		if err != nil {
			return fmt.Errorf("%s (the running template was put back, the canary removed)", why)
		}
		return nil
	}
	res.Steps = append(res.Steps, RollStep{Updated: res.Replicas, Of: res.Replicas, Ready: ready})
	res.Promoted, res.promoting = true, false
	if err := deleteCanary(ctx, o); err != nil {
		return err
	}
	res.Done = time.Now()
	res.ServedFirst, res.ServedLast = mediaServed(ctx, o, res)
	a.postRollout(ctx, o.Client, ns, name, PhaseSucceeded, say)
	say("promoted: %s", res.Summary())
	return nil
}

// rollOutTemplate changes the Deployment's template (change) and waits
// for its rollout, resuming a paused Deployment for it and pausing it
// again (even when ctx ends: a held Deployment must stay held).
func rollOutTemplate(ctx context.Context, o RollOptions, change func() error) (ready time.Time, err error) {
	name := o.Release.Service
	if err := change(); err != nil {
		return time.Time{}, err
	}
	d, err := o.Client.Typed.AppsV1().Deployments(o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return time.Time{}, err
	}
	if d.Spec.Paused {
		if err := patchDeployment(ctx, o, name, []byte(`{"spec":{"paused":false}}`)); err != nil {
			return time.Time{}, err
		}
		defer func() {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if perr := patchDeployment(pctx, o, name, []byte(`{"spec":{"paused":true}}`)); perr != nil && err == nil {
				err = perr
			}
		}()
	}
	return waitDeployment(ctx, o, name, o.Analysis.Deadline, nil)
}

// replaceTemplate puts a pod template on the Deployment.
func replaceTemplate(ctx context.Context, o RollOptions, t *corev1.PodTemplateSpec) error {
	raw, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template", "value": t}})
	if err != nil {
		return err
	}
	if _, err := o.Client.Typed.AppsV1().Deployments(o.Namespace).Patch(ctx, o.Release.Service, types.JSONPatchType, raw,
		metav1.PatchOptions{FieldManager: "darktower-canary"}); err != nil {
		return fmt.Errorf("putting the running template back on %s: %w", o.Release.Service, err)
	}
	return nil
}

// removeCanary is the rollback: the canary Deployment is deleted, and the
// traffic is back when none of its pods is left (a media-handler relays
// its sessions until its process ends, not until it is marked for
// deletion).
func removeCanary(ctx context.Context, o RollOptions, res *RollResult, why string, say func(string, ...any)) error {
	res.Reason = why
	say("rolling back: %s", why)
	// The canary first: it is what serves the release.
	if err := deleteCanary(ctx, o); err != nil {
		return err
	}
	if !res.FirstTraffic.IsZero() {
		res.TrafficBack = time.Now()
	}
	if res.heldPrevious != nil {
		// The paused Deployment gets its running pods' template back, so
		// that resuming it later does not roll the failed release.
		if err := replaceTemplate(ctx, o, res.heldPrevious); err != nil {
			return fmt.Errorf("rolling %s back: %w", o.Release.Service, err)
		}
	}
	res.Done = time.Now()
	res.ServedFirst, res.ServedLast = mediaServed(ctx, o, res)
	o.Analysis.postRollout(ctx, o.Client, o.Namespace, o.Release.Service, PhaseFailed, say)
	say("rolled back: %s", res.Summary())
	return nil
}

// deleteCanary deletes the canary Deployment and waits until its pods are
// gone (bounded by the analysis's deadline).
func deleteCanary(ctx context.Context, o RollOptions) error {
	name := CanaryDeploymentName(o.Release.Service)
	bg := metav1.DeletePropagationBackground
	if err := o.Client.Typed.AppsV1().Deployments(o.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the canary %s: %w", name, err)
	}
	end := time.Now().Add(o.Analysis.Deadline)
	for {
		pods, err := o.Client.Typed.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name + "," + TrackLabel + "=canary"})
		if err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("removing the canary %s: %d pod(s) still there after %s", name, len(pods.Items), o.Analysis.Deadline)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Poll):
		}
	}
}

// waitDeployment waits until a Deployment's rollout is complete (every
// pod at its template and ready, none of an older one left) and returns
// when (the zero time if not within deadline). firstReady, if set, is
// told when one of its pods first serves.
func waitDeployment(ctx context.Context, o RollOptions, name string, deadline time.Duration, firstReady func(time.Time)) (time.Time, error) {
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		d, err := o.Client.Typed.AppsV1().Deployments(o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, err
		}
		if firstReady != nil {
			pods, err := o.Client.Typed.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
			if err != nil {
				return time.Time{}, err
			}
			if slices.ContainsFunc(pods.Items, servingPod) {
				firstReady(time.Now())
				firstReady = nil
			}
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want && d.Status.ReadyReplicas == want && d.Status.Replicas == want {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(o.Poll):
		}
	}
	return time.Time{}, nil
}

func patchDeployment(ctx context.Context, o RollOptions, name string, raw []byte) error {
	if _, err := o.Client.Typed.AppsV1().Deployments(o.Namespace).Patch(ctx, name, types.StrategicMergePatchType, raw,
		metav1.PatchOptions{FieldManager: "darktower-canary"}); err != nil {
		return fmt.Errorf("patching Deployment %s/%s: %w", o.Namespace, name, err)
	}
	return nil
}

// mediaServed reads when the canary's pods relayed datagrams, as the
// load's clients counted them (darktower_load_datagrams_total by
// media_handler), from Prometheus.
func mediaServed(ctx context.Context, o RollOptions, res *RollResult) (first, last time.Time) {
	first, last, err := counterGrew(ctx, o.Client, fmt.Sprintf(`darktower_load_datagrams_total{namespace=%q, media_handler=~%q, outcome="relayed"}`,
		o.Namespace, weightedPods(o.Release.Service).Canary), res.Applied, time.Time{})
	if err != nil {
		upstream.Say(o.Progress, "canary %s: when the canary relayed, from Prometheus: %v", o.Release.Service, err)
	}
	return first, last
}

// RolloutKind says how `canary roll` rolls service out: "StatefulSet"
// (by partition) or "Deployment" (a pod-weighted canary).
func RolloutKind(ctx context.Context, client *cluster.Client, namespace, service string) (string, error) {
	if _, err := client.Typed.AppsV1().StatefulSets(namespace).Get(ctx, service, metav1.GetOptions{}); err == nil {
		return "StatefulSet", nil
	} else if !apierrors.IsNotFound(err) {
		return "", err
	}
	if _, err := client.Typed.AppsV1().Deployments(namespace).Get(ctx, service, metav1.GetOptions{}); err == nil {
		return "Deployment", nil
	} else if !apierrors.IsNotFound(err) {
		return "", err
	}
	return "", fmt.Errorf("no StatefulSet or Deployment %s/%s to roll out (--service, --namespace)", namespace, service)
}

// runningTemplate is the pod template a paused Deployment's pods run: its
// one ReplicaSet with pods, whose template differs from the Deployment's
// (the held release). Anything else is refused: no release held, or a
// rollout under way.
func runningTemplate(ctx context.Context, o RollOptions, d *appsv1.Deployment) (*corev1.PodTemplateSpec, error) {
	sets, err := o.Client.Typed.AppsV1().ReplicaSets(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
	if err != nil {
		return nil, err
	}
	var running []appsv1.ReplicaSet
	for _, rs := range sets.Items {
		if metav1.IsControlledBy(&rs, d) && rs.Status.Replicas > 0 {
			running = append(running, rs)
		}
	}
	if len(running) != 1 {
		return nil, fmt.Errorf("Deployment %s runs %d ReplicaSets with pods: a rollout is under way; let it finish before rolling a held release", d.Name, len(running))
	}
	t := running[0].Spec.Template.DeepCopy()
	delete(t.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	if apiequality.Semantic.DeepEqual(*t, d.Spec.Template) {
		return nil, fmt.Errorf("no release held: Deployment %s is paused but its pods run its template (give the release, e.g. --image REF)", d.Name)
	}
	return t, nil
}
