package preview_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A pull request's preview, end to end on a real cluster: preview up
// deploys a fresh build-all with the preview overlay onto its own one-node
// kind cluster — every workload Ready (PostgreSQL, Redis and Prometheus
// from Debian's packages, the four services with the ADR's probes, behind
// the real NetworkPolicies) — Prometheus reports each service's target up
// as its ServiceMonitor configures it, then a deleted pod of each service is replaced and
// Ready, a Redis outage turns meeting-controller unready and it recovers
// without a restart; list shows the preview with its PR, commit and state,
// reap leaves a young preview alone and removes an expired one.
func TestPreviewLifecycleOnARealCluster(t *testing.T) {
	release, err := kindtest.ClusterTurn()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	defer func() {
		if t.Failed() {
			t.Log(progress.String())
		}
	}()

	// A fresh build of this checkout (host platform, skeleton base, the
	// empty fixture vulnerability DB, unsigned).
	dbDir := t.TempDir()
	if err := vulndbtest.Write(dbDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	start := time.Now()
	if _, err := flow.BuildAll(ctx, flow.BuildAllOptions{Root: kindtest.RepoRoot(t), Out: dist, Base: build.BaseSkeleton,
		Platforms: []string{"linux/amd64"}, Version: "0.0.0-preview-test", SourceURL: "https://example.com/src",
		VulnDB: dbDir, NoSign: true, Progress: &progress}); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE build-all (4 services, linux/amd64) in %s", time.Since(start).Round(100*time.Millisecond))

	pr, state := kindtest.ThrowawayPreview(t, 900000)
	start = time.Now()
	info, res, err := preview.Up(ctx, preview.Options{PR: pr, Commit: "0123456789abcdef0123456789abcdef01234567", Root: kindtest.RepoRoot(t), Dist: dist,
		NodeImage: kindcluster.NodeImageBuilt, StateDir: state, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != "ready" || info.PR != pr || !strings.HasPrefix(info.Commit, "0123456789ab") {
		t.Fatalf("preview up: %+v", info)
	}
	for _, s := range res.Steps {
		t.Logf("FIGURE deploy: %s: %s", s.Name, s.Duration.Round(100*time.Millisecond))
	}
	t.Logf("FIGURE preview up (cluster, images loaded, data stores, secrets, overlay applied, every workload Ready) in %s", time.Since(start).Round(100*time.Millisecond))
	// preview up ran the smoke check: AC's token accepted by GC, a
	// datagram relayed by MH between two participants admitted by MC.
	if !strings.Contains(info.Smoke, "ok   token") || !strings.Contains(info.Smoke, "ok   mhs") || !strings.Contains(info.Smoke, "ok   media") {
		t.Fatalf("preview up's smoke report:\n%s", info.Smoke)
	}
	t.Logf("FIGURE smoke check in the preview:\n%s", info.Smoke)
	c := &kindcluster.Cluster{Name: preview.Name(pr), Kubeconfig: kindcluster.KubeconfigPath(state, preview.Name(pr))}
	client, _, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}

	ns := res.Namespace
	checkPrometheusScrapesEveryService(ctx, t, client, ns)

	for _, w := range res.Workloads {
		if w.Namespace != ns {
			continue
		}
		sel := "app.kubernetes.io/name=" + w.Name
		start := time.Now()
		before, err := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		victim, err := client.DeleteOnePod(ctx, ns, sel, nil)
		if err != nil {
			t.Fatal(err)
		}
		var victimUID types.UID
		for _, p := range before.Items {
			if p.Name == victim {
				victimUID = p.UID
			}
		}
		// Replaced: as many Ready pods as before, the victim not among them
		// (a StatefulSet's replacement has the same name: judged by UID).
		for {
			pods, err := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				t.Fatal(err)
			}
			ready := 0
			for _, p := range pods.Items {
				if p.UID != victimUID && p.DeletionTimestamp == nil && kindcluster.Ready(&p) {
					ready++
				}
			}
			if ready == len(before.Items) {
				break
			}
			if time.Since(start) > 3*time.Minute {
				t.Fatalf("after deleting %s: %d of %d pods Ready", victim, ready, len(before.Items))
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("FIGURE %s: pod %s deleted, replaced and Ready in %s", w.Name, victim, time.Since(start).Round(100*time.Millisecond))
	}

	// Every pod replaced: the replacements registered again (MC with GC, MH
	// with every MC), so the smoke check passes once more.
	if report, err := preview.Smoke(ctx, c, client, kindtest.RepoRoot(t), ns, nil); err != nil {
		t.Fatalf("smoke check after every pod was replaced: %v", err)
	} else {
		t.Logf("smoke check after every pod was replaced:\n%s", report)
	}
	// The smoke check can fail: without the policy that lets it reach MC,
	// its media check fails (the ticket request times out) and names it.
	policies := client.Typed.NetworkingV1().NetworkPolicies(ns)
	smokeToMC, err := policies.Get(ctx, "meeting-controller-from-darktower-smoke", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := policies.Delete(ctx, smokeToMC.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	report, err := preview.Smoke(ctx, c, client, kindtest.RepoRoot(t), ns, nil)
	if err == nil || !strings.Contains(report, "ok   token") || !strings.Contains(report, "FAIL media") || !strings.Contains(report, "meeting-controller's ticket") {
		t.Fatalf("smoke check with MC closed to it: err %v\n%s", err, report)
	}
	t.Logf("FIGURE smoke check with MC's smoke policy deleted fails as it should:\n%s", report)
	smokeToMC.ResourceVersion, smokeToMC.UID = "", ""
	if _, err := policies.Create(ctx, smokeToMC, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := preview.Smoke(ctx, c, client, kindtest.RepoRoot(t), ns, nil); err != nil {
		t.Fatalf("smoke check with the policy restored: %v", err)
	}

	// Redis outage: meeting-controller goes unready, then recovers in place.
	mcSel := "app.kubernetes.io/name=meeting-controller"
	restarts := func() int32 {
		pods, _ := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: mcSel})
		var n int32
		for _, p := range pods.Items {
			for _, s := range p.Status.ContainerStatuses {
				n += s.RestartCount
			}
		}
		return n
	}
	before := restarts()
	// The outage: Redis scaled to zero (a deleted pod is replaced within
	// the readiness probe's 15 s failure budget, too fast to be seen).
	scale := func(n int32) {
		t.Helper()
		sc, err := client.Typed.AppsV1().Deployments(deploy.DataNamespace).GetScale(ctx, "redis", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sc.Spec.Replicas = n
		if _, err := client.Typed.AppsV1().Deployments(deploy.DataNamespace).UpdateScale(ctx, "redis", sc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	scale(0)
	sawUnready := false
	for time.Since(start) < 2*time.Minute && !sawUnready {
		notReady, _ := client.NotReadyPods(ctx, ns, mcSel)
		sawUnready = len(notReady) > 0
		time.Sleep(500 * time.Millisecond)
	}
	if !sawUnready {
		t.Fatal("meeting-controller stayed ready while Redis was gone")
	}
	t.Logf("FIGURE meeting-controller unready %s into the outage", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	scale(1)
	if err := client.WaitReady(ctx, res.Workloads, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE Redis back and meeting-controller ready again %s after Redis was restored", time.Since(start).Round(100*time.Millisecond))
	if after := restarts(); after != before {
		t.Errorf("meeting-controller restarted %d time(s) during the Redis outage; it should recover in place", after-before)
	}

	readinessChain(ctx, t, client, ns, res.Workloads)
	if report, err := preview.Smoke(ctx, c, client, kindtest.RepoRoot(t), ns, nil); err != nil {
		t.Fatalf("smoke check after the readiness chain: %v", err)
	} else {
		t.Logf("smoke check after the readiness chain:\n%s", report)
	}

	// list, then reap: a young preview stays, an expired one goes.
	list, err := preview.List(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	var found *preview.Info
	for i := range list {
		if list[i].PR == pr {
			found = &list[i]
		}
	}
	if found == nil || found.State != "ready" || found.Created.IsZero() || !found.Expires.After(found.Created) {
		t.Fatalf("preview list: %+v", list)
	}
	if reaped, err := preview.Reap(ctx, time.Hour, time.Now(), state, nil, pr); err != nil || len(reaped) != 0 {
		t.Fatalf("reap --ttl 1h removed a preview made just now: %v %v", reaped, err)
	}
	reaped, err := preview.Reap(ctx, time.Hour, time.Now().Add(2*time.Hour), state, nil, pr)
	if err != nil || len(reaped) != 1 || reaped[0].PR != pr {
		t.Fatalf("reap two hours later: %v %v", reaped, err)
	}
	if names, _ := kindcluster.List(ctx); slices.Contains(names, preview.Name(pr)) {
		t.Fatalf("cluster %s still exists after reap", preview.Name(pr))
	}
}

// checkPrometheusScrapesEveryService waits for Prometheus (deployed from
// the overlay's ServiceMonitors) to report up == 1 for a target of each
// service's job, with the namespace, service and pod labels set: the
// scrape crossed the services' NetworkPolicies from the monitoring
// namespace and reached /metrics on the ops port.
func checkPrometheusScrapesEveryService(ctx context.Context, t *testing.T, client *cluster.Client, ns string) {
	t.Helper()
	pods, err := client.Typed.CoreV1().Pods(deploy.MonitoringNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=prometheus"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("Prometheus pods in %s: %v %v", deploy.MonitoringNamespace, pods, err)
	}
	p := pods.Items[0]
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			t.Logf("FIGURE Prometheus pod %s Ready %s after it was created", p.Name, c.LastTransitionTime.Sub(p.CreationTimestamp.Time))
		}
	}
	jobs := []string{"ac-service", "global-controller", "media-handler", "meeting-controller"}
	start := time.Now()
	var last []deploy.Sample
	for {
		samples, err := deploy.PrometheusQuery(ctx, client, "up")
		if err != nil {
			t.Fatal(err)
		}
		last = samples
		up := map[string]bool{}
		for _, s := range samples {
			m := s.Metric
			if s.Value == 1 && m["namespace"] == ns && m["service"] == m["job"] && m["pod"] != "" {
				up[m["job"]] = true
			}
		}
		missing := slices.DeleteFunc(slices.Clone(jobs), func(j string) bool { return up[j] })
		if len(missing) == 0 {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("after %s Prometheus reports no target up for %v; up = %+v", time.Since(start).Round(time.Second), missing, last)
		}
		time.Sleep(2 * time.Second)
	}
	for _, s := range last {
		t.Logf("prometheus: up{job=%q, pod=%q, instance=%q} = %v", s.Metric["job"], s.Metric["pod"], s.Metric["instance"], s.Value)
	}
	t.Logf("FIGURE Prometheus: every service's target up == 1 %s after the deploy finished", time.Since(start).Round(100*time.Millisecond))
	// A query Prometheus refuses is an error that says why.
	if _, err := deploy.PrometheusQuery(ctx, client, "up{"); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Errorf("a malformed query: want Prometheus's bad_data error, got %v", err)
	}
}

// readinessChain: ADR-0012's readiness chain, in pods. With ac-service
// gone a new meeting-controller pod does not turn ready (it cannot get the
// token it registers with GC with); with meeting-controller gone a new
// media-handler pod does not (it has no MC to register with). Restored,
// they turn ready in the chain's order: AC first; then MC and MH
// together, within one readiness period: a starting MC stays out of
// service until an MH has registered with it (its warm-up), and an MH is
// ready once an MC has taken its registration, which an MC does only once
// it is registered with GC (so after AC).
func readinessChain(ctx context.Context, t *testing.T, client *cluster.Client, ns string, all []cluster.Workload) {
	t.Helper()
	scale := func(kind, name string, n int32) {
		t.Helper()
		var err error
		switch kind {
		case "StatefulSet":
			sc, gerr := client.Typed.AppsV1().StatefulSets(ns).GetScale(ctx, name, metav1.GetOptions{})
			if err = gerr; err == nil {
				sc.Spec.Replicas = n
				_, err = client.Typed.AppsV1().StatefulSets(ns).UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
			}
		default:
			sc, gerr := client.Typed.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
			if err = gerr; err == nil {
				sc.Spec.Replicas = n
				_, err = client.Typed.AppsV1().Deployments(ns).UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			t.Fatalf("scaling %s %s to %d: %v", kind, name, n, err)
		}
	}
	replicas := func(kind, name string) int32 {
		t.Helper()
		if kind == "StatefulSet" {
			o, err := client.Typed.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return *o.Spec.Replicas
		}
		o, err := client.Typed.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *o.Spec.Replicas
	}
	pods := func(name string) []corev1.Pod {
		t.Helper()
		l, err := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	gone := func(name string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for len(pods(name)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s's pods still there 2 min after scaling to zero", name)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// staysUnready: a fresh pod of name (made by deleting one) runs but is
	// not Ready for the whole window (three readiness periods and more).
	staysUnready := func(name, because string) {
		t.Helper()
		before := map[types.UID]bool{}
		for _, p := range pods(name) {
			before[p.UID] = true
		}
		if _, err := client.DeleteOnePod(ctx, ns, "app.kubernetes.io/name="+name, nil); err != nil {
			t.Fatal(err)
		}
		const window = 25 * time.Second
		start := time.Now()
		sawRunning := false
		for time.Since(start) < window {
			for _, p := range pods(name) {
				if before[p.UID] || p.DeletionTimestamp != nil {
					continue // the pods that were there: only the new one counts
				}
				if kindcluster.Ready(&p) {
					t.Fatalf("a new %s pod (%s) turned Ready %s after %s", name, p.Name, time.Since(start).Round(100*time.Millisecond), because)
				}
				if p.Status.Phase == corev1.PodRunning {
					sawRunning = true
				}
			}
			time.Sleep(time.Second)
		}
		if !sawRunning {
			t.Fatalf("no new %s pod was running during the window: the check proves nothing", name)
		}
		t.Logf("FIGURE readiness chain: a new %s pod ran %s without turning Ready, %s", name, window, because)
	}
	acReplicas, mcReplicas := replicas("StatefulSet", "ac-service"), replicas("Deployment", "meeting-controller")
	scale("StatefulSet", "ac-service", 0)
	gone("ac-service")
	staysUnready("meeting-controller", "with ac-service gone")
	scale("Deployment", "meeting-controller", 0)
	gone("meeting-controller")
	staysUnready("media-handler", "with meeting-controller gone")
	start := time.Now()
	scale("StatefulSet", "ac-service", acReplicas)
	scale("Deployment", "meeting-controller", mcReplicas)
	if err := client.WaitReady(ctx, all, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The order they turned Ready in: each service's last pod.
	readyAt := func(name string) time.Time {
		var last time.Time
		for _, p := range pods(name) {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && c.LastTransitionTime.After(last) {
					last = c.LastTransitionTime.Time
				}
			}
		}
		return last
	}
	ac, mc, mh := readyAt("ac-service"), readyAt("meeting-controller"), readyAt("media-handler")
	t.Logf("FIGURE readiness chain restored in %s: ac-service Ready at +%s, meeting-controller +%s, media-handler +%s",
		time.Since(start).Round(100*time.Millisecond), ac.Sub(start).Round(time.Second), mc.Sub(start).Round(time.Second), mh.Sub(start).Round(time.Second))
	// Conditions carry whole seconds: equal is in order. The kubelet
	// probes every 5 s (ADR-0012), so "together" is within 6 s.
	if mc.Before(ac) || mh.Before(ac) || mh.Sub(mc).Abs() > 6*time.Second {
		t.Errorf("readiness out of the chain's order: ac-service %s, meeting-controller %s, media-handler %s", ac, mc, mh)
	}
}
