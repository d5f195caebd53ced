package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/upstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A StatefulSet (ac-service) cannot be Flagger's target: its pods keep
// their names and identities, so there is no primary to copy it to. The
// pipeline rolls it out itself, by its partition: a release reaches the
// highest ordinal first (partition replicas-1), then one more pod at each
// step, each step judged by the same analysis Flagger runs for the
// Deployments (ReadAnalysis: a Canary's interval, threshold, webhooks and
// MetricTemplates), with the release's pods as the canary and the pods
// below the partition as the baseline. Traffic is shared by the
// Service, in proportion to the pods: with 2 replicas the one step is
// half. A rollback puts the previous pod template back, so the
// StatefulSet controller replaces the release's pods with the previous
// revision's.

// RollOptions say which StatefulSet takes which release, judged how.
type RollOptions struct {
	Client    *cluster.Client
	Namespace string
	Release   Release   // Release.Service is the StatefulSet's name
	Analysis  *Analysis // ReadAnalysis of the Canary whose analysis it runs
	// Steps are a Deployment's canary pods at each step (RollDeployment;
	// default one); a StatefulSet steps one pod at a time.
	Steps    []int32
	Poll     time.Duration
	Progress io.Writer
}

// RollStep is one step the rollout went through: a partition of a
// StatefulSet, or a number of canary pods beside a Deployment.
type RollStep struct {
	Partition int32
	Updated   int32     // pods at the release
	Of        int32     // pods serving in all (the release's and the others)
	Ready     time.Time // when the release's pods of the step were all ready
	Checks    []string  // each check's readings, in order
}

// RollResult is how a partitioned rollout went, timed.
type RollResult struct {
	Release
	Replicas int32
	Promoted bool
	Reason   string // why it was rolled back
	Applied  time.Time
	Done     time.Time
	Steps    []RollStep
	// FirstTraffic is when the first of the release's pods was ready (in
	// the Service's endpoints): where a faulty release's regression
	// starts. TrafficBack is when, after a rollback, none was serving.
	FirstTraffic, TrafficBack time.Time
	// ServedFirst and ServedLast: the first and last scrape of the
	// release's pods that counted new API requests (as Result's).
	ServedFirst, ServedLast time.Time

	revision string // the release's ControllerRevision
	weighted bool   // a pod-weighted canary's (RollDeployment)
	// heldPrevious: a held Deployment's running template (RollDeployment
	// of the release a paused Deployment holds), put back on rollback.
	heldPrevious *corev1.PodTemplateSpec
	promoting    bool // RollDeployment's promotion began (it cleans up after itself)
}

// sawTraffic notes when the first of the release's pods served.
func (r *RollResult) sawTraffic(t time.Time) {
	if r.FirstTraffic.IsZero() {
		r.FirstTraffic = t
	}
}

// RollbackTime is from the regression's start to no release pod serving.
func (r *RollResult) RollbackTime() time.Duration {
	if r.FirstTraffic.IsZero() || r.TrafficBack.IsZero() {
		return 0
	}
	return r.TrafficBack.Sub(r.FirstTraffic)
}

// ServedTime is from the first to the last scrape that saw the release's
// pods serve.
func (r *RollResult) ServedTime() time.Duration {
	if r.ServedFirst.IsZero() {
		return 0
	}
	return r.ServedLast.Sub(r.ServedFirst)
}

// Summary is one line: outcome, steps with times, rollback time.
func (r *RollResult) Summary() string {
	var steps []string
	for _, s := range r.Steps {
		at := "never ready"
		if !s.Ready.IsZero() {
			at = fmt.Sprintf("%.0fs", s.Ready.Sub(r.Applied).Seconds())
		}
		steps = append(steps, fmt.Sprintf("%d/%d pods@%s (%d checks)", s.Updated, s.Of, at, len(s.Checks)))
	}
	end := "promoted"
	if !r.Promoted {
		end = "rolled back (" + r.Reason + ")"
	}
	s := fmt.Sprintf("%s %s: %s after %.0fs; steps %s", r.Service, r.Name, end, r.Done.Sub(r.Applied).Seconds(), strings.Join(steps, " → "))
	if !r.Promoted && !r.FirstTraffic.IsZero() && !r.TrafficBack.IsZero() && r.weighted {
		s += fmt.Sprintf("; regression start (first canary pod ready) → no canary pod left: %.1fs", r.RollbackTime().Seconds())
		if !r.ServedFirst.IsZero() {
			s += fmt.Sprintf(", %.0fs by the clients' datagrams through it", r.ServedTime().Seconds())
		}
	} else if !r.Promoted && !r.FirstTraffic.IsZero() && !r.TrafficBack.IsZero() {
		s += fmt.Sprintf("; regression start → no release pod serving: %.1fs by the endpoints", r.RollbackTime().Seconds())
		if !r.ServedFirst.IsZero() {
			s += fmt.Sprintf(", %.0fs by the release pods' scrapes", r.ServedTime().Seconds())
		}
	}
	return s
}

// statefulPods is the Prometheus pod regexp of the StatefulSet's pods
// with ordinals [from, to).
func statefulPods(name string, from, to int32) string {
	var ords []string
	for i := from; i < to; i++ {
		ords = append(ords, strconv.Itoa(int(i)))
	}
	return name + "-(" + strings.Join(ords, "|") + ")"
}

// RollStatefulSet releases o.Release to a StatefulSet partition by
// partition, judging each step by o.Analysis, and promotes it (partition
// 0, every pod at the release) or rolls it back. A rollback is a
// RollResult with Promoted false, not an error: the error is for a
// release that could not be applied or followed.
func RollStatefulSet(ctx context.Context, o RollOptions) (*RollResult, error) {
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.Analysis == nil {
		return nil, fmt.Errorf("rolling %s: no analysis (ReadAnalysis of a Canary)", o.Release.Service)
	}
	name, ns, a := o.Release.Service, o.Namespace, o.Analysis
	say := func(format string, args ...any) { upstream.Say(o.Progress, "canary "+name+": "+format, args...) }
	// The StatefulSet as its controller has seen it: a release applied
	// just now (held) has no update revision until then.
	sts, err := observed(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("rolling %s: %w", name, err)
	}
	n := int32(1)
	if sts.Spec.Replicas != nil {
		n = *sts.Spec.Replicas
	}
	if n < 2 {
		return nil, fmt.Errorf("rolling %s: %d replica: a partitioned rollout needs a pod at the release and one before it (scale it to 2 or more)", name, n)
	}
	held := o.Release.held()
	pending := sts.Status.UpdateRevision != sts.Status.CurrentRevision
	switch {
	case held && !pending:
		return nil, fmt.Errorf("rolling %s: no release given and none held: every pod runs revision %s (give the release, e.g. --image REF, or apply it with the partition held at the replicas)",
			name, sts.Status.CurrentRevision)
	case !held && pending:
		return nil, fmt.Errorf("rolling %s: a rollout is under way (revision %s on %d of %d pods); let it finish, roll it back, or roll it on without a new release",
			name, sts.Status.UpdateRevision, sts.Status.UpdatedReplicas, n)
	}
	// The first step: the highest ordinal; or, rolling on a release some
	// pods already run (an interrupted roll), from the lowest of them, so
	// that the baseline holds none of the release's pods.
	start := n - 1
	if held {
		low, err := lowestOrdinalAt(ctx, o, sts, sts.Status.UpdateRevision)
		if err != nil {
			return nil, fmt.Errorf("rolling %s: %w", name, err)
		}
		if low == 0 {
			return nil, fmt.Errorf("rolling %s: pod %s-0 already runs the release %s, so no pod is left to judge it against: promote it (partition 0) or put the previous template back",
				name, name, sts.Status.UpdateRevision)
		}
		start = min(start, low)
	}
	if err := a.Validate(ns, name, Pods{Canary: statefulPods(name, start, n), Baseline: statefulPods(name, 0, start)}); err != nil {
		return nil, fmt.Errorf("rolling %s with the analysis of Canary %s: %w", name, a.From, err)
	}
	previous := sts.Spec.Template.DeepCopy()
	if held {
		// Applied already (GitOps, with the partition at or above the
		// replicas so that no pod took it): the previous template is the
		// current revision's.
		if previous, err = revisionTemplate(ctx, o.Client, ns, sts.Status.CurrentRevision); err != nil {
			return nil, fmt.Errorf("rolling %s: %w", name, err)
		}
		o.Release.Name = sts.Status.UpdateRevision
	}
	res := &RollResult{Release: o.Release, Replicas: n, Applied: time.Now()}
	patch := map[string]any{"spec": map[string]any{}}
	if held {
		say("rolling on the held release (revision %s over %s), partition %d of %d replicas; analysis of Canary %s: a check every %s, rollback at %d failed",
			sts.Status.UpdateRevision, sts.Status.CurrentRevision, start, n, a.From, a.Interval, a.Threshold)
	} else {
		say("releasing %s (%s), partition %d of %d replicas; analysis of Canary %s: a check every %s, rollback at %d failed",
			o.Release.Name, envString(o.Release.Env), start, n, a.From, a.Interval, a.Threshold)
		patch = releasePatch(o.Release)
	}
	patch["spec"].(map[string]any)["updateStrategy"] = map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": start}}
	if err := patchStatefulSet(ctx, o.Client, ns, name, patch); err != nil {
		return nil, err
	}
	// From here the release may serve: a failure to follow it (an API
	// error, a cancelled run: Ctrl-C, a CI job's SIGTERM) puts the previous
	// template back rather than leave it half-rolled.
	partition := start
	err = roll(ctx, o, res, previous, &partition, say)
	if err == nil {
		return res, nil
	}
	if res.Reason != "" {
		return nil, err // the rollback itself failed
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Deadline)
	defer cancel()
	if rerr := rollBack(rctx, o, res, previous, partition, "interrupted: "+err.Error(), say); rerr != nil {
		return nil, fmt.Errorf("%w; and putting the previous template back failed: %v", err, rerr)
	}
	return nil, fmt.Errorf("%w (the previous template was put back)", err)
}

// roll runs the steps from *partition down (keeping *partition where the
// rollout is), then promotes, or rolls back at the threshold.
func roll(ctx context.Context, o RollOptions, res *RollResult, previous *corev1.PodTemplateSpec, partition *int32, say func(string, ...any)) error {
	name, ns, a, n := o.Release.Service, o.Namespace, o.Analysis, res.Replicas
	// The release's revision, once the controller has seen it.
	sts, err := observed(ctx, o)
	if err != nil {
		return err
	}
	res.revision = sts.Status.UpdateRevision
	failed := 0
	if why, err := preRollout(ctx, o, &failed, say); err != nil {
		return err
	} else if why != "" {
		return rollBack(ctx, o, res, previous, *partition, why, say)
	}
	for p := *partition; p >= 1; p-- {
		if p < *partition {
			if err := patchStatefulSet(ctx, o.Client, ns, name, map[string]any{"spec": map[string]any{
				"updateStrategy": map[string]any{"rollingUpdate": map[string]any{"partition": p}}}}); err != nil {
				return err
			}
			*partition = p
		}
		step := RollStep{Partition: p, Updated: n - p, Of: n}
		ready, err := waitPartition(ctx, o, p, n, a.Deadline, res.sawTraffic)
		if err != nil {
			return err
		}
		if ready.IsZero() {
			res.Steps = append(res.Steps, step)
			return rollBack(ctx, o, res, previous, p, fmt.Sprintf("the release's pods were not ready within %s (progressDeadlineSeconds)", a.Deadline), say)
		}
		step.Ready = ready
		// The release's pods are those at or above the partition, up to
		// the replicas now (the autoscaler may have added some).
		if cur, err := o.Client.Typed.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && cur.Spec.Replicas != nil && *cur.Spec.Replicas > n {
			n = *cur.Spec.Replicas
		}
		step.Updated, step.Of = n-p, n
		say("partition %d: %d of %d pods at the release, ready", p, n-p, n)
		pods := Pods{Canary: statefulPods(name, p, n), Baseline: statefulPods(name, 0, p)}
		why, err := judgeStep(ctx, o, &step, pods, &failed, fmt.Sprintf("partition %d", p), say)
		res.Steps = append(res.Steps, step)
		if err != nil {
			return err
		}
		if why != "" {
			return rollBack(ctx, o, res, previous, p, why, say)
		}
	}
	// Promotion: every pod to the release.
	if err := patchStatefulSet(ctx, o.Client, ns, name, map[string]any{"spec": map[string]any{
		"updateStrategy": map[string]any{"rollingUpdate": map[string]any{"partition": 0}}}}); err != nil {
		return err
	}
	*partition = 0
	ready, err := waitPartition(ctx, o, 0, n, a.Deadline, nil)
	if err != nil {
		return err
	}
	if ready.IsZero() {
		return rollBack(ctx, o, res, previous, 0, fmt.Sprintf("promotion: the release's pods were not all ready within %s", a.Deadline), say)
	}
	res.Steps = append(res.Steps, RollStep{Partition: 0, Updated: n, Of: n, Ready: ready})
	res.Promoted, res.Done = true, time.Now()
	res.ServedFirst, res.ServedLast = servedFrom(ctx, o, res)
	a.postRollout(ctx, o.Client, ns, name, PhaseSucceeded, say)
	say("promoted: %s", res.Summary())
	return nil
}

// preRollout calls the pre-rollout hooks until they pass, as Flagger
// does, each failure a failed check (counted in *failed); why is the
// reason to roll back once the threshold is reached.
func preRollout(ctx context.Context, o RollOptions, failed *int, say func(string, ...any)) (why string, err error) {
	a := o.Analysis
	for {
		err := a.CallWebhooks(ctx, o.Client, "pre-rollout", o.Namespace, o.Release.Service, PhaseProgressing)
		if err == nil {
			return "", nil
		}
		*failed++
		say("pre-rollout check failed (%d of %d): %v", *failed, a.Threshold, err)
		if *failed >= a.Threshold {
			return "pre-rollout webhook failed: " + err.Error(), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(a.Interval):
		}
	}
}

// judgeStep checks a step every interval until a check passes (the step
// is done: "") or the failed checks, counted across steps in *failed,
// reach the threshold (the reason to roll back). Each check calls the
// rollout hooks first, as Flagger does; a hook that fails is a failed
// check.
func judgeStep(ctx context.Context, o RollOptions, step *RollStep, pods Pods, failed *int, label string, say func(string, ...any)) (string, error) {
	a, ns, name := o.Analysis, o.Namespace, o.Release.Service
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(a.Interval):
		}
		var why string
		passed := false
		if err := a.CallWebhooks(ctx, o.Client, "rollout", ns, name, PhaseProgressing); err != nil {
			why = "external check: " + err.Error()
			step.Checks = append(step.Checks, why)
		} else {
			results, err := a.Check(ctx, o.Client, ns, name, pods)
			if err != nil {
				return "", err
			}
			var line []string
			passed = true
			for _, r := range results {
				line = append(line, r.String())
				if !r.Passed && why == "" {
					passed, why = false, r.Metric+" "+r.Why
				}
			}
			step.Checks = append(step.Checks, strings.Join(line, "; "))
		}
		if passed {
			say("%s check passed: %s", label, step.Checks[len(step.Checks)-1])
			return "", nil
		}
		*failed++
		say("%s check failed (%d of %d): %s", label, *failed, a.Threshold, why)
		if *failed >= a.Threshold {
			return why, nil
		}
	}
}

// rollBack puts the previous pod template back (the controller replaces
// the release's pods at and above the partition), notes when none of the
// release's pods serves any more, waits for the previous revision's to
// be ready, then clears the partition.
func rollBack(ctx context.Context, o RollOptions, res *RollResult, previous *corev1.PodTemplateSpec, partition int32, why string, say func(string, ...any)) error {
	res.Reason = why
	say("rolling back: %s", why)
	raw, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template", "value": previous}})
	if err != nil {
		return err
	}
	if _, err := o.Client.Typed.AppsV1().StatefulSets(o.Namespace).Patch(ctx, o.Release.Service, types.JSONPatchType, raw,
		metav1.PatchOptions{FieldManager: "darktower-canary"}); err != nil {
		return fmt.Errorf("rolling %s back: %w", o.Release.Service, err)
	}
	if !res.FirstTraffic.IsZero() {
		end := time.Now().Add(o.Analysis.Deadline)
		for res.TrafficBack.IsZero() {
			if time.Now().After(end) {
				// Something re-applies the release (a GitOps sync during
				// the roll re-applies its template): say so, do not spin.
				return fmt.Errorf("rolling %s back: the release's pods (revision %s) still serve %s after the previous template was put back; is something re-applying it?",
					o.Release.Service, res.revision, o.Analysis.Deadline)
			}
			pods, err := o.Client.Typed.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: appsv1.ControllerRevisionHashLabelKey + "=" + res.revision})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(pods.Items, servingPod) {
				res.TrafficBack = time.Now()
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(o.Poll):
			}
		}
	}
	ready, err := waitPartition(ctx, o, partition, res.Replicas, o.Analysis.Deadline, nil)
	if err != nil {
		return err
	}
	if ready.IsZero() {
		return fmt.Errorf("rolling %s back: the previous revision's pods were not ready within %s", o.Release.Service, o.Analysis.Deadline)
	}
	if err := patchStatefulSet(ctx, o.Client, o.Namespace, o.Release.Service, map[string]any{"spec": map[string]any{
		"updateStrategy": map[string]any{"rollingUpdate": map[string]any{"partition": 0}}}}); err != nil {
		return err
	}
	res.Done = time.Now()
	res.ServedFirst, res.ServedLast = servedFrom(ctx, o, res)
	o.Analysis.postRollout(ctx, o.Client, o.Namespace, o.Release.Service, PhaseFailed, say)
	say("rolled back: %s", res.Summary())
	return nil
}

// lowestOrdinalAt is the lowest ordinal of the StatefulSet's pods at a
// revision (its replicas when none is).
func lowestOrdinalAt(ctx context.Context, o RollOptions, sts *appsv1.StatefulSet, revision string) (int32, error) {
	pods, err := o.Client.Typed.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: appsv1.ControllerRevisionHashLabelKey + "=" + revision})
	if err != nil {
		return 0, err
	}
	low := int32(1 << 30)
	if sts.Spec.Replicas != nil {
		low = *sts.Spec.Replicas
	}
	for _, p := range pods.Items {
		if ord, err := strconv.Atoi(strings.TrimPrefix(p.Name, sts.Name+"-")); err == nil && int32(ord) < low {
			low = int32(ord)
		}
	}
	return low, nil
}

// held: the release names no change, so it is the one the StatefulSet
// holds (applied, no pod at it yet).
func (r Release) held() bool {
	return r.Name == "" && r.Image == "" && len(r.Env) == 0 && r.CPURequest == ""
}

// revisionTemplate is the pod template a StatefulSet's ControllerRevision
// records (its data is the patch {"spec":{"template":{…}}}).
func revisionTemplate(ctx context.Context, client *cluster.Client, namespace, revision string) (*corev1.PodTemplateSpec, error) {
	cr, err := client.Typed.AppsV1().ControllerRevisions(namespace).Get(ctx, revision, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the previous revision %s: %w", revision, err)
	}
	var data struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &data); err != nil || len(data.Spec.Template.Spec.Containers) == 0 {
		return nil, fmt.Errorf("the previous revision %s holds no pod template (%v)", revision, err)
	}
	return &data.Spec.Template, nil
}

// observed is the StatefulSet once its controller has seen its latest
// spec (status.observedGeneration), so that its revisions are current.
func observed(ctx context.Context, o RollOptions) (*appsv1.StatefulSet, error) {
	for {
		sts, err := o.Client.Typed.AppsV1().StatefulSets(o.Namespace).Get(ctx, o.Release.Service, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != "" {
			return sts, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(o.Poll):
		}
	}
}

// waitPartition waits until every pod at or above the partition runs the
// StatefulSet's update revision and all n are ready; it returns when (the
// zero time if not within deadline). firstReady, if set, is told when a
// pod at the update revision first serves. After a rollback the update
// revision is the previous one again, so the same wait also sees the
// release's pods go.
func waitPartition(ctx context.Context, o RollOptions, partition, n int32, deadline time.Duration, firstReady func(time.Time)) (time.Time, error) {
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		sts, err := o.Client.Typed.AppsV1().StatefulSets(o.Namespace).Get(ctx, o.Release.Service, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, err
		}
		pods, err := o.Client.Typed.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sts.Spec.Selector)})
		if err != nil {
			return time.Time{}, err
		}
		if sts.Spec.Replicas != nil {
			// The autoscaler may have scaled it since the rollout began.
			n = *sts.Spec.Replicas
		}
		if sts.Status.ObservedGeneration >= sts.Generation {
			done, anyUpdatedServing := partitionDone(sts, pods.Items, partition, n)
			if anyUpdatedServing && firstReady != nil {
				firstReady(time.Now())
				firstReady = nil
			}
			if done {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(o.Poll):
		}
	}
	return time.Time{}, nil
}

// partitionDone: all n pods serving, those at or above the partition at
// the update revision, those below it not (the controller leaves them).
func partitionDone(sts *appsv1.StatefulSet, pods []corev1.Pod, partition, n int32) (done, anyUpdatedServing bool) {
	serving := 0
	done = true
	for _, p := range pods {
		ord, err := strconv.Atoi(strings.TrimPrefix(p.Name, sts.Name+"-"))
		if err != nil {
			continue
		}
		updated := p.Labels[appsv1.ControllerRevisionHashLabelKey] == sts.Status.UpdateRevision
		up := servingPod(p)
		if up {
			serving++
		}
		if updated && up && sts.Status.UpdateRevision != sts.Status.CurrentRevision {
			anyUpdatedServing = true
		}
		if int32(ord) >= partition && (!updated || !up) {
			done = false
		}
	}
	return done && serving == int(n), anyUpdatedServing
}

// servingPod: ready and not being deleted (a deleted pod leaves the
// Service's ready endpoints at once).
func servingPod(p corev1.Pod) bool {
	return p.DeletionTimestamp == nil && kindcluster.Ready(&p)
}

func patchStatefulSet(ctx context.Context, client *cluster.Client, namespace, name string, patch map[string]any) error {
	raw, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := client.Typed.AppsV1().StatefulSets(namespace).Patch(ctx, name, types.StrategicMergePatchType, raw, metav1.PatchOptions{FieldManager: "darktower-canary"}); err != nil {
		return fmt.Errorf("patching StatefulSet %s/%s: %w", namespace, name, err)
	}
	return nil
}

// servedFrom reads when the release's pods (the highest ordinals of the
// first step) served, from their scrapes.
func servedFrom(ctx context.Context, o RollOptions, res *RollResult) (first, last time.Time) {
	if len(res.Steps) == 0 {
		return first, last
	}
	s := res.Steps[0]
	var until time.Time
	if !res.TrafficBack.IsZero() {
		// The pods come back under their names at the previous revision:
		// count up to the first scrape after the release's left.
		until = res.TrafficBack.Add(5 * time.Second)
	}
	first, last, err := servedWindow(ctx, o.Client, o.Namespace, statefulPods(o.Release.Service, s.Partition, res.Replicas), o.Release.Routes, res.Applied, until)
	if err != nil {
		upstream.Say(o.Progress, "canary %s: when the release served, from Prometheus: %v", o.Release.Service, err)
	}
	return first, last
}
