package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/kindcluster"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The executors Run can use.
const (
	ExecutorAuto      = ""          // Litmus where it is installed, else the pipeline's own
	ExecutorDarkTower = "darktower" // the pipeline's own (this package)
	ExecutorLitmus    = "litmus"    // apply the engines, read Litmus's ChaosResults
)

// Options is a chaos run.
type Options struct {
	Config      *rest.Config
	Experiments []Experiment // run in this order, one at a time
	// Definitions are the ChaosExperiments (LoadDefinitions): the runner
	// pod carries the labels all of them give their experiment pod.
	Definitions    map[string]Definition
	ChaosNamespace string // Settings.ChaosNamespace
	// PlatformDir is infra/platform/chaos: its namespace, account, Roles
	// and NetworkPolicies are applied first (its ChaosExperiments only on
	// the Litmus path). Empty: nothing is applied.
	PlatformDir string
	// EnginesDir is the environment's chaos kustomization (Litmus path:
	// the engines applied from it).
	EnginesDir string
	// RunnerImage is the netprobe image in the nodes (LoadRunner), the
	// httpProbes' client inside the cluster.
	RunnerImage string
	NodeExec    NodeExec // container-kill, pod-network-loss (KindNodeExec)
	// Duration and Interval, when set, replace every experiment's
	// TOTAL_CHAOS_DURATION and (where it has one) CHAOS_INTERVAL. A test
	// and CI knob, to keep a run short; the report says when they were
	// used. The engines are the truth of what production-like chaos is.
	Duration, Interval time.Duration
	ResultTimeout      time.Duration // Litmus path: the wait for a verdict (Settings.Timeout)
	// SteadyTimeout bounds the wait, before each experiment, for every pod
	// of the target's namespace and of the probed services' namespaces to
	// be Ready (default 3 min): one experiment's damage must not be
	// blamed on the next.
	SteadyTimeout time.Duration
	Executor      string // ExecutorAuto (default), ExecutorDarkTower or ExecutorLitmus
	Progress      io.Writer
}

// LitmusInstalled reports whether the cluster serves Litmus's ChaosEngine
// (the chaosengines.litmuschaos.io CRD is installed).
func LitmusInstalled(cfg *rest.Config) (bool, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	list, err := cs.Discovery().ServerResourcesForGroupVersion(group)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("asking the API server for %s: %w", group, err)
	}
	for _, r := range list.APIResources {
		if r.Name == "chaosengines" {
			return true, nil
		}
	}
	return false, nil
}

// Run runs the experiments one after another and reports each. It fails
// (error) only when it cannot run at all; an experiment that fails is in
// the report (Report.Failed).
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.ChaosNamespace == "" {
		return nil, errors.New("chaos run: no chaos namespace (infra/ci/chaos-tests.yaml chaosNamespace)")
	}
	litmus, err := LitmusInstalled(o.Config)
	if err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now()}
	switch {
	case o.Executor == ExecutorLitmus && !litmus:
		return nil, errors.New("chaos run: the Litmus executor was asked for, but the cluster does not serve chaosengines.litmuschaos.io: install the litmus-core chart (infra/platform/charts.yaml) or use the darktower executor")
	case o.Executor == ExecutorLitmus || (o.Executor == ExecutorAuto && litmus):
		rep.Executor, rep.ExecutorNote = ExecutorLitmus, "Litmus is installed in this cluster: engines applied, verdicts read from its ChaosResults"
		o.Progress = &prefixed{w: o.Progress, prefix: "chaos [executor litmus] "}
		err = runLitmus(ctx, o, rep)
	case o.Executor == ExecutorDarkTower || o.Executor == ExecutorAuto:
		rep.Executor, rep.ExecutorNote = ExecutorDarkTower, "Litmus is not installed in this cluster"
		if litmus {
			rep.ExecutorNote = "Litmus is installed in this cluster, but the darktower executor was asked for"
		}
		o.Progress = &prefixed{w: o.Progress, prefix: "chaos [executor darktower] "}
		err = runDarkTower(ctx, o, rep)
	default:
		return nil, fmt.Errorf("chaos run: executor %q: use darktower or litmus (or leave it empty: Litmus where installed)", o.Executor)
	}
	rep.Duration = time.Since(rep.Started)
	return rep, err
}

// connect makes the clients both executors use and applies the chaos
// platform (its ChaosExperiments only with Litmus).
func connect(ctx context.Context, o Options, withLitmus bool) (*cluster.Client, dynamic.Interface, error) {
	client, err := cluster.New(o.Config)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(o.Config)
	if err != nil {
		return nil, nil, err
	}
	if o.PlatformDir != "" {
		if err := ApplyPlatform(ctx, client, o.PlatformDir, withLitmus, o.Progress); err != nil {
			return nil, nil, err
		}
	}
	return client, dyn, nil
}

// ApplyPlatform applies infra/platform/chaos's objects, less Litmus's own
// kinds unless withLitmus: server-side apply, so what is there already is
// left as it is and what drifted is put back.
func ApplyPlatform(ctx context.Context, client *cluster.Client, dir string, withLitmus bool, progress io.Writer) error {
	stream, err := Render(dir)
	if err != nil {
		return err
	}
	var docs [][]byte
	var skipped int
	for _, doc := range cluster.SplitYAML(stream) {
		if !withLitmus && strings.Contains(string(doc), "apiVersion: "+group) {
			skipped++
			continue
		}
		docs = append(docs, doc)
	}
	objs, err := cluster.ParseObjects(docs)
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range client.Apply(ctx, objs, false) {
		if r.Err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", r.Object, r.Err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("applying %s: %s", dir, strings.Join(failed, "; "))
	}
	fmt.Fprintf(progress, "applied %s: %d object(s) (%d Litmus object(s) left out)\n", dir, len(objs), skipped)
	return nil
}

func runDarkTower(ctx context.Context, o Options, rep *Report) error {
	say := func(format string, a ...any) {
		fmt.Fprintf(o.Progress, format+"\n", a...)
	}
	client, dyn, err := connect(ctx, o, false)
	if err != nil {
		return err
	}
	pr := &prober{cfg: o.Config, cs: client.Typed, dyn: dyn, client: client}
	if needsRunner(o.Experiments) {
		if o.RunnerImage == "" {
			return errors.New("chaos run: httpProbes need the runner image (LoadRunner loads tools/netprobe into the nodes)")
		}
		pod, cleanup, err := startRunner(ctx, client.Typed, o)
		if err != nil {
			return err
		}
		defer cleanup()
		pr.runner.namespace, pr.runner.pod = o.ChaosNamespace, pod
		say("probe runner %s/%s Ready (image %s)", o.ChaosNamespace, pod, o.RunnerImage)
	}
	for _, exp := range o.Experiments {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		x := &execution{exp: withTiming(exp, o.Duration, o.Interval), cs: client.Typed, prober: pr, nodeExec: o.NodeExec, say: say, steady: o.SteadyTimeout}
		x.overrides = overrides(exp, x.exp)
		res := x.run(ctx)
		res.Executor = ExecutorDarkTower
		say("%s: %s (%s) in %s", res.Engine, res.Verdict, res.Reason, res.Duration.Round(100*time.Millisecond))
		rep.Experiments = append(rep.Experiments, res)
	}
	return nil
}

// withTiming applies the Duration/Interval knob to a copy of exp.
func withTiming(exp Experiment, d, i time.Duration) Experiment {
	exp.Env = maps.Clone(exp.Env)
	if d > 0 {
		exp.Env["TOTAL_CHAOS_DURATION"] = strconv.Itoa(int(d.Seconds()))
	}
	if _, has := exp.Env["CHAOS_INTERVAL"]; has && i > 0 {
		exp.Env["CHAOS_INTERVAL"] = strconv.Itoa(int(i.Seconds()))
	}
	return exp
}

// overrides says what the Duration/Interval knob changed, or "".
func overrides(was, is Experiment) string {
	var s []string
	for _, k := range []string{"TOTAL_CHAOS_DURATION", "CHAOS_INTERVAL"} {
		if was.Env[k] != is.Env[k] {
			s = append(s, fmt.Sprintf("%s=%s (engine: %s)", k, is.Env[k], was.Env[k]))
		}
	}
	if len(s) == 0 {
		return ""
	}
	return "shortened by the run's Duration/Interval knob: " + strings.Join(s, ", ")
}

func needsRunner(exps []Experiment) bool {
	for _, e := range exps {
		for _, p := range e.Probes {
			if p.Type == "httpProbe" {
				return true
			}
		}
	}
	return false
}

// runnerLabels are the labels every ChaosExperiment gives its experiment
// pod (those the NetworkPolicies admit), plus the runner's own name.
func runnerLabels(defs map[string]Definition) map[string]string {
	var common map[string]string
	for _, d := range defs {
		if common == nil {
			common = maps.Clone(d.Labels)
			continue
		}
		for k, v := range common {
			if d.Labels[k] != v {
				delete(common, k)
			}
		}
	}
	if common == nil {
		common = map[string]string{}
	}
	common["app.kubernetes.io/name"] = "darktower-chaos-probe"
	return common
}

// startRunner starts the long-lived pod the httpProbes run from: netprobe
// idling (serve with no port), exec'd into per try. It satisfies Pod
// Security "restricted", stricter than the chaos namespace enforces.
func startRunner(ctx context.Context, cs kubernetes.Interface, o Options) (string, func(), error) {
	labels := runnerLabels(o.Definitions)
	sel := "app.kubernetes.io/name=darktower-chaos-probe"
	pods := cs.CoreV1().Pods(o.ChaosNamespace)
	// A runner left by an interrupted run goes first.
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{LabelSelector: sel}); err != nil {
		return "", nil, fmt.Errorf("removing an old probe runner in %s: %w", o.ChaosNamespace, err)
	}
	no, yes, uid := false, true, int64(65532)
	name := fmt.Sprintf("darktower-chaos-probe-%d", time.Now().Unix()%100000)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			AutomountServiceAccountToken:  &no,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "probe", Image: o.RunnerImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"netprobe", "serve"},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return "", nil, fmt.Errorf("starting the probe runner in %s: %w", o.ChaosNamespace, err)
	}
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pods.Delete(cctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
	if err := kindcluster.WaitPodsReady(ctx, cs, o.ChaosNamespace, sel, 2*time.Minute); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("the probe runner (image %s, loaded by LoadRunner): %w", o.RunnerImage, err)
	}
	return name, cleanup, nil
}

// LoadRunner builds tools/netprobe and loads it into c's nodes; it returns
// the image for Options.RunnerImage.
func LoadRunner(ctx context.Context, c *kindcluster.Cluster, repoRoot string) (string, error) {
	return c.LoadGoProgram(ctx, kindcluster.GoProgram{ModuleDir: repoRoot, Package: "./tools/netprobe", Name: "netprobe"})
}

// execution is one experiment under way.
type execution struct {
	exp       Experiment
	cs        kubernetes.Interface
	prober    *prober
	nodeExec  NodeExec
	say       func(string, ...any)
	overrides string
	steady    time.Duration

	duration, interval time.Duration
	perc               int
	start              time.Time
	phase              atomic.Value // Phase
	mu                 sync.Mutex
	injections         []string
}

func (x *execution) currentPhase() Phase { return x.phase.Load().(Phase) }

func (x *execution) injected(what string) {
	x.mu.Lock()
	x.injections = append(x.injections, what)
	x.mu.Unlock()
	x.say("%s: %s", x.exp.Engine, what)
}

// run is Litmus's experiment flow: pre-chaos probes, the fault for the
// duration (with the probes that watch it), post-chaos probes, the
// verdict.
func (x *execution) run(ctx context.Context) ExperimentResult {
	e := x.exp
	x.start = time.Now()
	x.phase.Store(PreChaos)
	res := ExperimentResult{Engine: e.Engine, Fault: e.Fault, Target: fmt.Sprintf("%s %s/%s", e.Target.Kind, e.Target.Namespace, e.Target.Label), Overrides: x.overrides}
	finish := func(verdict, reason string) ExperimentResult {
		res.Verdict, res.Reason, res.Duration = verdict, reason, time.Since(x.start)
		res.Injections = x.injections
		res.Injected = len(x.injections) > 0
		return res
	}
	var err error
	if x.duration, err = e.Duration(); err != nil {
		return finish(VerdictError, err.Error())
	}
	if x.interval, err = e.Interval(); err != nil {
		return finish(VerdictError, err.Error())
	}
	if x.perc, err = e.PodsAffectedPercent(); err != nil {
		return finish(VerdictError, err.Error())
	}
	var inject func(context.Context) error
	switch e.Fault {
	case "pod-delete":
		inject = x.podDelete
	case "container-kill":
		inject = x.containerKill
	case "pod-network-loss":
		inject = x.networkLoss
	default:
		return finish(VerdictError, fmt.Sprintf("fault %s is not one the pipeline's executor injects (pod-delete, container-kill, pod-network-loss)", e.Fault))
	}
	if x.duration <= 0 {
		return finish(VerdictError, "TOTAL_CHAOS_DURATION is not set: no chaos to inject")
	}
	runs := make([]*probeRun, len(e.Probes))
	for i, p := range e.Probes {
		if err := Supported(p); err != nil {
			return finish(VerdictError, err.Error())
		}
		runs[i] = &probeRun{probe: p}
	}
	if len(runs) == 0 {
		return finish(VerdictError, "the experiment has no probe: a Pass would prove nothing")
	}
	// The steady state first (Litmus's runner and experiment pods take
	// their own time to start; this executor starts at once, so a target
	// still recovering from the previous experiment would fail this one).
	waited, err := steadyState(ctx, x.cs, steadyNamespaces(e), x.steady)
	res.SteadyWait = waited
	if err != nil {
		return finish(VerdictError, "no steady state before the chaos: "+err.Error())
	}
	x.start = time.Now()
	x.say("%s: steady after %s; %s of %s for %s (interval %s, %d%% of the pods)", e.Engine, waited.Round(100*time.Millisecond), e.Fault, res.Target, x.duration, x.interval, x.perc)

	chaosCtx, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	var stopped atomic.Value // the reason the chaos was stopped early
	onFail := func(r *probeRun) func() {
		return func() {
			if r.probe.Run.StopOnFailure {
				stopped.CompareAndSwap(nil, "probe "+r.probe.Name+" failed with stopOnFailure: the chaos was stopped")
				stopChaos()
			}
		}
	}

	// Pre-chaos: SOT and Edge once; Continuous starts polling.
	var continuous sync.WaitGroup
	stopContinuous := make(chan struct{})
	preFailed := ""
	for _, r := range runs {
		switch r.probe.Mode {
		case SOT, Edge:
			if !x.once(ctx, r) && r.probe.Run.StopOnFailure && preFailed == "" {
				preFailed = r.probe.Name
			}
		case Continuous:
			continuous.Add(1)
			go func() { defer continuous.Done(); x.poll(ctx, r, stopContinuous, onFail(r)) }()
		}
	}

	var injectErr error
	if preFailed == "" {
		x.phase.Store(DuringChaos)
		var onChaos sync.WaitGroup
		stopOnChaos := make(chan struct{})
		for _, r := range runs {
			if r.probe.Mode == OnChaos {
				onChaos.Add(1)
				go func() { defer onChaos.Done(); x.poll(ctx, r, stopOnChaos, onFail(r)) }()
			}
		}
		injectErr = inject(chaosCtx)
		close(stopOnChaos)
		onChaos.Wait()
	}

	// Post-chaos: EOT and Edge once; then Continuous stops.
	x.phase.Store(PostChaos)
	if preFailed == "" {
		for _, r := range runs {
			if r.probe.Mode == EOT || r.probe.Mode == Edge {
				x.once(ctx, r)
			}
		}
	}
	close(stopContinuous)
	continuous.Wait()
	if ctx.Err() != nil {
		return finish(VerdictError, "cancelled: "+ctx.Err().Error())
	}

	var failed []string
	for _, r := range runs {
		j, err := Judge(r.probe.Mode, r.probe.Run.StopOnFailure, r.out)
		pres := ProbeResult{Name: r.probe.Name, Type: r.probe.Type, Mode: r.probe.Mode, Verdict: j.Verdict, Tries: r.tries, Detail: r.first}
		for _, ph := range []Phase{PreChaos, DuringChaos, PostChaos} {
			pres.Triggers += len(r.out[ph])
		}
		if err != nil {
			pres.Verdict, pres.Detail = Failed, err.Error()
		}
		if pres.Verdict == NA {
			pres.Detail = "never judged (the experiment stopped before it ran)"
		}
		res.Probes = append(res.Probes, pres)
		if pres.Verdict != Passed {
			failed = append(failed, fmt.Sprintf("probe %s %s: %s", r.probe.Name, pres.Verdict, pres.Detail))
		}
	}
	switch {
	case injectErr != nil:
		return finish(VerdictError, "injecting "+e.Fault+": "+injectErr.Error())
	case preFailed != "":
		return finish(VerdictFail, "probe "+preFailed+" failed before the chaos (stopOnFailure): the fault was never injected; "+strings.Join(failed, "; "))
	case len(x.injections) == 0:
		return finish(VerdictFail, "the fault was never injected")
	case len(failed) > 0:
		reason := strings.Join(failed, "; ")
		if s, ok := stopped.Load().(string); ok {
			reason = s + "; " + reason
		}
		return finish(VerdictFail, reason)
	}
	return finish(VerdictPass, fmt.Sprintf("%d injection(s); every probe Passed", countInjections(x.injections)))
}

// countInjections counts the faults, not the restorations.
func countInjections(list []string) int {
	n := 0
	for _, s := range list {
		if !strings.HasPrefix(s, "restored ") {
			n++
		}
	}
	return n
}

// steadyNamespaces are the target's namespace and those of the services
// the httpProbes ask (http://<svc>.<namespace>.svc...).
func steadyNamespaces(e Experiment) []string {
	out := []string{e.Target.Namespace}
	for _, p := range e.Probes {
		if p.Type != "httpProbe" {
			continue
		}
		u, err := url.Parse(p.URL)
		if err != nil {
			continue
		}
		if labels := strings.Split(u.Hostname(), "."); len(labels) >= 3 && labels[2] == "svc" && !slices.Contains(out, labels[1]) {
			out = append(out, labels[1])
		}
	}
	return out
}

// steadyState waits until every pod of the namespaces that is meant to
// run (not Succeeded or Failed) is Ready and none is being deleted.
func steadyState(ctx context.Context, cs kubernetes.Interface, namespaces []string, within time.Duration) (time.Duration, error) {
	if within <= 0 {
		within = 3 * time.Minute
	}
	start := time.Now()
	var last string
	for {
		var waiting []string
		for _, ns := range namespaces {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return time.Since(start), err
			}
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
					continue
				}
				if p.DeletionTimestamp != nil || !kindcluster.Ready(&p) {
					waiting = append(waiting, ns+"/"+p.Name)
				}
			}
		}
		if len(waiting) == 0 {
			return time.Since(start), nil
		}
		last = strings.Join(waiting, ", ")
		if time.Since(start) > within {
			return time.Since(start), fmt.Errorf("pods not Ready after %s: %s", within, last)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// prefixed starts every line written to w with prefix: each line of a
// run's progress names the executor.
type prefixed struct {
	w      io.Writer
	prefix string
	mid    bool // within a line
	mu     sync.Mutex
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.mid {
			out = append(out, p.prefix...)
			p.mid = true
		}
		out = append(out, c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
