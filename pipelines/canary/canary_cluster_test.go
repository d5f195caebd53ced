package canary_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/canary"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The fault knobs of a canaryfault test build (services/internal/opskit):
// the fraction of API calls answered 5xx, and the least time any takes.
const (
	knobErrors = "DT_FAULT_5XX_RATIO"
	knobFloor  = "DT_FAULT_MIN_LATENCY"
	knobRoutes = "DT_FAULT_ROUTES"
	// The routes the load calls (global-controller's, meeting-controller's):
	// the services' calls to each other stay healthy.
	loadRoutes = "GET /v1/meeting-controllers,POST /v1/media-tickets"
)

// scenario is one release and what Flagger must make of it.
type scenario struct {
	name     string
	errors   string // the release's 5xx fraction
	floor    string // and its latency floor
	promoted bool
}

// The releases each service goes through, in order (each is judged
// against the primary the one before it left): the primary starts at 50%
// 5xx, so that a 1.4× or 2× error rate is a whole number of failures in
// even the 5% step's few requests, and at a 400 ms latency floor, well
// above what the services take on this machine (their own p99 here is
// 50-200 ms, and noisy: an added delay of tens of milliseconds did not
// make a p99 2.5× as long), so that a floor 2.5× or 1.9× as high is a p99
// as many times the primary's.
var (
	baseline  = scenario{name: "baseline", errors: "0.5", floor: "400ms"}
	scenarios = []scenario{
		{name: "good", errors: "0.5", floor: "400ms", promoted: true},
		{name: "errors-2x", errors: "1", floor: "400ms", promoted: false},
		{name: "errors-1.4x", errors: "0.7", floor: "400ms", promoted: true},
		{name: "p99-2.5x", errors: "0.7", floor: "1s", promoted: false},
		{name: "p99-1.9x", errors: "0.7", floor: "760ms", promoted: true},
	}
)

// ac-service's releases (a StatefulSet: `canary roll`, partition by
// partition under global-controller's analysis): its baseline is the
// preview's, fault-free; the faulty release fails half the key-set
// fetches, the route the load calls it on.
const acService = "ac-service"

var (
	keySetRoute = "GET /.well-known/jwks.json"
	acScenarios = []scenario{
		{name: "good", promoted: true},
		{name: "errors", errors: "0.5", promoted: false},
	}
)

// media-handler's releases (a pod-weighted canary: `canary roll`, one
// canary pod beside the service's two, under its own suspended Canary's
// analysis): the faulty ones drop half the datagrams they should forward
// (the clients' loss), or hold each 25 ms (its forwarding p99).
const (
	mediaHandler   = "media-handler"
	knobMediaDrop  = "DT_FAULT_MEDIA_DROP_RATIO"
	knobMediaDelay = "DT_FAULT_MEDIA_DELAY"
)

var mhScenarios = []struct {
	name, knob, value string
	promoted          bool
	metric            string // the check a rollback must name
}{
	{name: "good", promoted: true}, // held by the paused Deployment, then rolled
	{name: "loss", knob: knobMediaDrop, value: "0.5", metric: "media-loss-vs-baseline"},
	{name: "slow", knob: knobMediaDelay, value: "25ms", metric: "forwarding-p99-vs-baseline"},
}

func (s scenario) acRelease() canary.Release {
	r := canary.Release{Service: acService, Name: s.name, Routes: []string{keySetRoute}}
	if s.errors != "" {
		r.Env = map[string]string{knobErrors: s.errors, knobRoutes: keySetRoute}
	}
	return r
}

func (s scenario) release(service string) canary.Release {
	return canary.Release{Service: service, Name: s.name, Env: map[string]string{knobErrors: s.errors, knobFloor: s.floor, knobRoutes: loadRoutes},
		Routes: strings.Split(loadRoutes, ",")}
}

// TestCanaryReleasesOnARealCluster is the canary proof: a canaryfault test
// build in a preview cluster, Flagger v1.36.1 and Traefik built from the
// module proxy, the preview's Prometheus, a load through the Gateway; then
// global-controller and meeting-controller (concurrently) each take the
// releases above, and each must be promoted or rolled back as listed,
// with every rollback within 60 s of its regression's start.
func TestCanaryReleasesOnARealCluster(t *testing.T) {
	release, err := kindtest.ClusterTurn()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	log := kindtest.Progress(t)
	root := kindtest.RepoRoot(t)
	dbDir := t.TempDir()
	if err := vulndbtest.Write(dbDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	pr, state := kindtest.ThrowawayPreview(t, 700000)

	start := time.Now()
	if _, err := flow.BuildAll(ctx, flow.BuildAllOptions{Root: root, Out: dist, Base: build.BaseSkeleton,
		Platforms: []string{"linux/amd64"}, Version: "0.0.0-canary-test", SourceURL: "https://example.com/src",
		VulnDB: dbDir, NoSign: true, GoTags: []string{"canaryfault"}, Progress: log}); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE build-all --go-tags canaryfault in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	if _, _, err := preview.Up(ctx, preview.Options{PR: pr, Commit: "c0ffee0123456789c0ffee0123456789c0ffee01", Root: root, Dist: dist,
		NodeImage: kindcluster.NodeImageBuilt, StateDir: state, Progress: log}); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE preview of the canaryfault build up in %s", time.Since(start).Round(100*time.Millisecond))
	c := &kindcluster.Cluster{Name: preview.Name(pr), Kubeconfig: kindcluster.KubeconfigPath(state, preview.Name(pr))}
	client, _, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	const ns = "preview"
	services := []string{"global-controller", "meeting-controller"}

	// The primary each release is judged against: the baseline's faults,
	// rolled out before Flagger takes the Deployments over.
	var ws []cluster.Workload
	for _, svc := range services {
		r := baseline.release(svc)
		// One kind node has 2 CPUs to request: with a primary and a canary
		// of two services (2 pods each), 100m each does not fit.
		r.CPURequest = "40m"
		if err := canary.Apply(ctx, client, ns, r); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, cluster.Workload{Kind: "Deployment", Namespace: ns, Name: svc})
	}
	// media-handler's pods, and its canary's, fit beside them at 40m too.
	if err := canary.Apply(ctx, client, ns, canary.Release{Service: mediaHandler, Name: "baseline", CPURequest: "40m"}); err != nil {
		t.Fatal(err)
	}
	ws = append(ws, cluster.Workload{Kind: "Deployment", Namespace: ns, Name: mediaHandler})
	if err := client.WaitReady(ctx, ws, 5*time.Minute); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	// Flagger's and Traefik's images go through the pipeline judged like
	// the services' build above (its vulnerability DB and base).
	in, err := canary.Install(ctx, canary.InstallOptions{Root: root, Cluster: c, Client: client, Namespace: ns, Progress: log,
		Images: flow.BuildAllOptions{Base: build.BaseSkeleton, SourceURL: "https://example.com/src", VulnDB: dbDir, DevKeyDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE canary install (Flagger %s, Traefik %s, Gateway API %s; canaries %s) in %s", in.FlaggerVersion, in.TraefikVersion,
		in.GatewayAPIVersion, strings.Join(in.Canaries, ", "), time.Since(start).Round(100*time.Millisecond))

	// The load (Install's: 300 workers every 2 s through the Gateways,
	// 150 rounds a second, so the 5% step still sees 7.5 calls a second:
	// at its first check, 10 s after the shift, the samples Prometheus has
	// hold 3-8 s of it, 20-60 calls) is idle until a Canary's pre-rollout
	// webhook starts it.
	defer in.StopLoad()
	loadStarts := func() string {
		pods, err := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + canary.LoadComponent})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("the canary load's pod: %v (%d pods)", err, len(pods.Items))
		}
		logs, err := client.Typed.CoreV1().Pods(ns).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var starts []string
		for _, line := range strings.Split(string(logs), "\n") {
			if strings.Contains(line, "load: started by ") {
				starts = append(starts, line)
			}
		}
		return strings.Join(starts, "\n")
	}
	if got := loadStarts(); got != "" {
		t.Fatalf("the load started before any release:\n%s", got)
	}

	results := map[string][]*canary.Result{}
	var wg sync.WaitGroup
	var rmu sync.Mutex
	for _, svc := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range scenarios {
				r, err := canary.Run(ctx, client, ns, s.release(svc), 10*time.Minute, log)
				if err != nil {
					t.Errorf("%s %s: %v", svc, s.name, err)
					return
				}
				rmu.Lock()
				results[svc] = append(results[svc], r)
				rmu.Unlock()
			}
		}()
	}
	// ac-service at the same time: the pipeline's own partitioned rollout,
	// under global-controller's analysis (its MetricTemplates, thresholds
	// and webhooks), read from the cluster as Flagger reads them.
	var acResults []*canary.RollResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, err := canary.ReadAnalysis(ctx, client, ns, "global-controller")
		if err != nil {
			t.Errorf("%s: %v", acService, err)
			return
		}
		for i, s := range acScenarios {
			release := s.acRelease()
			if i == 0 {
				// The first as production delivers it: applied with the
				// partition held at the replicas (no pod takes it), then
				// rolled on by the pipeline with no release named.
				patch := fmt.Sprintf(`{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}},"template":{"metadata":{"annotations":{%q:%q}}}}}`,
					canary.ReleaseAnnotation, s.name)
				if _, err := client.Typed.AppsV1().StatefulSets(ns).Patch(ctx, acService, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Errorf("%s: holding %s: %v", acService, s.name, err)
					return
				}
				// Held: once the controller has seen it, no pod took it.
				var held bool
				for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && !held; time.Sleep(500 * time.Millisecond) {
					sts, err := client.Typed.AppsV1().StatefulSets(ns).Get(ctx, acService, metav1.GetOptions{})
					if err != nil {
						t.Errorf("%s: %v", acService, err)
						return
					}
					held = sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != sts.Status.CurrentRevision
					if held && sts.Status.UpdatedReplicas != 0 {
						t.Errorf("%s: the held release reached %d pod(s) before the pipeline rolled it", acService, sts.Status.UpdatedReplicas)
						return
					}
				}
				if !held {
					t.Errorf("%s: the held release never became the StatefulSet's update revision", acService)
					return
				}
				release = canary.Release{Service: acService, Routes: release.Routes}
			}
			r, err := canary.RollStatefulSet(ctx, canary.RollOptions{Client: client, Namespace: ns, Release: release, Analysis: a, Progress: log})
			if err != nil {
				t.Errorf("%s %s: %v", acService, s.name, err)
				return
			}
			acResults = append(acResults, r)
		}
	}()
	// media-handler at the same time: the pod-weighted canary, under its
	// own Canary's analysis, which Flagger (suspended) leaves alone.
	var mhResults []*canary.RollResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, err := canary.ReadAnalysis(ctx, client, ns, mediaHandler)
		if err != nil {
			t.Errorf("%s: %v", mediaHandler, err)
			return
		}
		for i, s := range mhScenarios {
			r := canary.Release{Service: mediaHandler, Name: s.name, CPURequest: "40m", Env: map[string]string{}}
			if s.knob != "" {
				r.Env[s.knob] = s.value
			}
			if i == 0 {
				// The first as staging and prod deliver it: applied to the
				// paused Deployment (no pod takes it), then rolled by the
				// pipeline with no release named.
				patch := fmt.Sprintf(`{"spec":{"paused":true,"template":{"metadata":{"annotations":{%q:%q}}}}}`, canary.ReleaseAnnotation, s.name)
				if _, err := client.Typed.AppsV1().Deployments(ns).Patch(ctx, mediaHandler, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Errorf("%s: holding %s: %v", mediaHandler, s.name, err)
					return
				}
				time.Sleep(5 * time.Second)
				d, err := client.Typed.AppsV1().Deployments(ns).Get(ctx, mediaHandler, metav1.GetOptions{})
				if err != nil || d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != 0 {
					t.Errorf("%s: the held release reached pods or was not observed: %v, %+v", mediaHandler, err, d.Status)
					return
				}
				r = canary.Release{Service: mediaHandler}
			}
			res, err := canary.RollDeployment(ctx, canary.RollOptions{Client: client, Namespace: ns, Release: r, Analysis: a, Progress: log})
			if err != nil {
				t.Errorf("%s %s: %v", mediaHandler, s.name, err)
				return
			}
			mhResults = append(mhResults, res)
		}
	}()
	wg.Wait()

	// Every analysis started the load through its pre-rollout webhook.
	starts := loadStarts()
	t.Logf("the load's starts:\n%s", starts)
	for _, svc := range append(services, acService, mediaHandler) {
		want := len(scenarios)
		switch svc {
		case acService:
			want = len(acScenarios)
		case mediaHandler:
			want = len(mhScenarios)
		}
		if n := strings.Count(starts, "started by "+ns+"/"+svc+"'s pre-rollout webhook"); n < want {
			t.Errorf("%s: the load was started by %d pre-rollout webhook call(s), want one for each of its %d releases", svc, n, want)
		}
	}
	// And every check was gated on the load's calls being answered: the
	// rollout webhook ran (at least once per release) and passed.
	gate := loadWebhooks(ctx, t, client, ns)
	t.Logf("FIGURE the load's webhook calls: %v", gate)
	if releases := 2*len(scenarios) + len(acScenarios) + len(mhScenarios); gate[`hook="gate",result="ok"`] < float64(releases) {
		t.Errorf("the rollout gate passed %v times, want at least once for each of the %d releases", gate[`hook="gate",result="ok"`], releases)
	}

	var acLines []string
	for i, r := range acResults {
		s := acScenarios[i]
		acLines = append(acLines, r.Summary())
		if r.Promoted != s.promoted {
			t.Errorf("%s %s: promoted = %v, want %v (%s)", acService, s.name, r.Promoted, s.promoted, r.Reason)
		}
		if s.promoted {
			continue
		}
		if d := r.RollbackTime(); r.FirstTraffic.IsZero() || r.TrafficBack.IsZero() || d > 60*time.Second {
			t.Errorf("%s %s: no release pod serving %.1f s after the first one did (%s → %s), want ≤ 60 s", acService, s.name, d.Seconds(), r.FirstTraffic, r.TrafficBack)
		}
		if d := r.ServedTime(); r.ServedFirst.IsZero() || d > 60*time.Second {
			t.Errorf("%s %s: the release's pod served from %s to %s (%.0f s), want some and ≤ 60 s", acService, s.name, r.ServedFirst, r.ServedLast, d.Seconds())
		}
		if !strings.Contains(r.Reason, "error-rate-vs-baseline") {
			t.Errorf("%s %s: rolled back for %q, want error-rate-vs-baseline named", acService, s.name, r.Reason)
		}
	}
	t.Logf("FIGURE partitioned rollouts of %s:\n  %s", acService, strings.Join(acLines, "\n  "))

	var mhLines []string
	for i, r := range mhResults {
		s := mhScenarios[i]
		line := r.Summary()
		if !r.ServedFirst.IsZero() {
			line += fmt.Sprintf("; the clients' datagrams through the canary: %s to %s after the release", r.ServedFirst.Sub(r.Applied).Round(time.Second), r.ServedLast.Sub(r.Applied).Round(time.Second))
		}
		for _, st := range r.Steps {
			for _, c := range st.Checks {
				line += "\n    check: " + c
			}
		}
		mhLines = append(mhLines, line)
		if r.Promoted != s.promoted {
			t.Errorf("%s %s: promoted = %v, want %v (%s)", mediaHandler, s.name, r.Promoted, s.promoted, r.Reason)
		}
		if r.ServedFirst.IsZero() {
			t.Errorf("%s %s: no client's datagram went through the canary: its analysis judged nothing", mediaHandler, s.name)
		}
		if s.promoted {
			continue
		}
		if d := r.RollbackTime(); r.FirstTraffic.IsZero() || r.TrafficBack.IsZero() || d > 60*time.Second {
			t.Errorf("%s %s: the canary's pods gone %.1f s after the first one served (%s → %s), want ≤ 60 s", mediaHandler, s.name, d.Seconds(), r.FirstTraffic, r.TrafficBack)
		}
		if !strings.Contains(r.Reason, s.metric) {
			t.Errorf("%s %s: rolled back for %q, want %s named", mediaHandler, s.name, r.Reason, s.metric)
		}
	}
	t.Logf("FIGURE pod-weighted canaries of %s:\n  %s", mediaHandler, strings.Join(mhLines, "\n  "))
	// Flagger left its suspended Canary alone: no primary, and the phase
	// its controller gives every new Canary (controller.go's syncHandler,
	// before the scheduler, which returns for a suspended one) and no
	// further.
	if _, err := client.Typed.AppsV1().Deployments(ns).Get(ctx, mediaHandler+"-primary", metav1.GetOptions{}); err == nil {
		t.Errorf("Flagger made %s-primary of a suspended Canary", mediaHandler)
	}
	if st, err := canary.Read(ctx, client, ns, mediaHandler); err != nil || (st.Phase != "" && st.Phase != canary.PhaseInitializing) || st.Iterations != 0 {
		t.Errorf("%s's suspended Canary: %v (%v), want at most Initializing (Flagger never ran it)", mediaHandler, st, err)
	}

	for _, svc := range services {
		var lines []string
		for i, r := range results[svc] {
			s := scenarios[i]
			lines = append(lines, r.Summary())
			if r.Outcome.Promoted() != s.promoted {
				t.Errorf("%s %s: promoted = %v, want %v (%s)", svc, s.name, r.Outcome.Promoted(), s.promoted, r.Outcome.Reason)
			}
			if s.promoted {
				if want := []int64{5, 10, 50}; !prefixOf(want, r.Weights) {
					t.Errorf("%s %s: canary weights %v, want %v then promotion", svc, s.name, r.Weights, want)
				}
				continue
			}
			if r.FirstTraffic.IsZero() || r.TrafficBack.IsZero() {
				t.Errorf("%s %s: rolled back without the route ever sending the canary traffic (%v)", svc, s.name, r.Weights)
			} else if d := r.RollbackTime(); d > 60*time.Second {
				t.Errorf("%s %s: traffic back on the primary %.1f s after the regression started, want ≤ 60 s", svc, s.name, d.Seconds())
			}
			// The pods agree: they served for at most 60 s (scraped every 5 s).
			if d := r.ServedTime(); r.ServedFirst.IsZero() || d > 60*time.Second {
				t.Errorf("%s %s: the canary's pods served from %s to %s (%.0f s), want some and ≤ 60 s", svc, s.name, r.ServedFirst, r.ServedLast, d.Seconds())
			}
			want := "error-rate-vs-baseline"
			if strings.HasPrefix(s.name, "p99") {
				want = "p99-latency-vs-baseline"
			}
			if !strings.Contains(r.Outcome.Reason, want) {
				t.Errorf("%s %s: rolled back for %q, want the metric %s named", svc, s.name, r.Outcome.Reason, want)
			}
		}
		t.Logf("FIGURE canary releases of %s:\n  %s", svc, strings.Join(lines, "\n  "))
	}
}

// loadWebhooks reads the canary load's darktower_load_webhooks_total from
// its /metrics, through the API server's pod proxy: labels → count.
func loadWebhooks(ctx context.Context, t *testing.T, client *cluster.Client, ns string) map[string]float64 {
	t.Helper()
	pods, err := client.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + canary.LoadComponent})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the canary load's pod: %v", err)
	}
	raw, err := client.Typed.CoreV1().Pods(ns).ProxyGet("http", pods.Items[0].Name, "8080", "/metrics", nil).DoRaw(ctx)
	if err != nil {
		t.Fatalf("the canary load's /metrics: %v", err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, "darktower_load_webhooks_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out[labels] = v
	}
	return out
}

// prefixOf: got starts with want.
func prefixOf(want, got []int64) bool {
	if len(got) < len(want) {
		return false
	}
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
