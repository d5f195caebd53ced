package chaos_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/chaos"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The pipeline's chaos executor on a real preview: a fresh build-all
// deployed by preview up, then the repository's engines (shortened to 20 s
// of chaos, 10 s between rounds: the Duration/Interval knob) — GC's
// pod-delete, MH's container-kill, MC's network loss and the Redis outage —
// run one after another with their probes judged as Litmus would; then
// experiments whose probes cannot pass fail, with the reason.
func TestChaosRunOnARealCluster(t *testing.T) {
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
	root := kindtest.RepoRoot(t)

	dbDir := t.TempDir()
	if err := vulndbtest.Write(dbDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The pull-request check's cluster stages, as `ci --cluster-checks`
	// runs them: build-all, the build deployed into pr-N (smoke-checked),
	// the chaos stage (six engines shortened to 20 s of chaos, 10 s between
	// rounds), its JUnit and summary in the output. The cluster is kept
	// for the proofs below.
	dist := t.TempDir()
	pr, state := kindtest.ThrowawayPreview(t, 800000)
	// What a healthy build must get from each.
	want := map[string]string{
		"ac-service-pod-delete":           chaos.VerdictPass,
		"global-controller-pod-delete":    chaos.VerdictPass,
		"media-handler-container-kill":    chaos.VerdictPass,
		"meeting-controller-network-loss": chaos.VerdictPass,
		"meeting-controller-pod-delete":   chaos.VerdictPass,
		"redis-pod-delete":                chaos.VerdictPass,
	}
	only := slices.Sorted(maps.Keys(want))
	start := time.Now()
	res, err := flow.PR(ctx, flow.PROptions{
		Cluster: &flow.ClusterChecks{PR: pr, Commit: "0123456789abcdef0123456789abcdef01234567", Keep: true, StateDir: state,
			NodeImage: kindcluster.NodeImageBuilt, Only: only, Duration: 20 * time.Second, Interval: 20 * time.Second},
		BuildAllOptions: flow.BuildAllOptions{Root: root, Out: dist, Base: build.BaseSkeleton,
			Platforms: []string{"linux/amd64"}, Version: "0.0.0-chaos-test", SourceURL: "https://example.com/src",
			VulnDB: dbDir, NoSign: true, Progress: &progress}})
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, c := range res.Checks {
		stages = append(stages, fmt.Sprintf("%s %.1f s", c.Name, c.Seconds))
	}
	t.Logf("FIGURE ci --cluster-checks in %s: %s", time.Since(start).Round(100*time.Millisecond), strings.Join(stages, ", "))
	if got := res.Checks[len(res.Checks)-1]; got.Name != "chaos" || !got.Passed {
		t.Fatalf("the last check is %+v, want chaos passed", got)
	}
	// What is released carries no fault knob: no -tags in its binaries.
	for _, svc := range []string{"ac-service", "meeting-controller"} {
		if got := goTagsOf(t, dist, svc); got != "" {
			t.Fatalf("a normal build's %s was built with -tags %q", svc, got)
		}
	}
	rep := res.Chaos
	if rep == nil || len(rep.Experiments) != len(want) {
		t.Fatalf("the ci result carries no chaos report of %d experiments: %+v", len(want), rep)
	}
	var table bytes.Buffer
	rep.Table(&table)
	t.Logf("FIGURE chaos stage of ci (6 engines, shortened to 20 s / 20 s):\n%s", table.String())

	c := &kindcluster.Cluster{Name: preview.Name(pr), Kubeconfig: kindcluster.KubeconfigPath(state, preview.Name(pr))}
	client, cfg, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	// The node has what the faults use.
	nodes, err := c.Nodes()
	if err != nil || len(nodes) == 0 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	exec := chaos.KindNodeExec(c)
	for _, tool := range [][]string{{"ctr", "--version"}, {"iptables", "--version"}, {"nsenter", "--version"}} {
		out, err := exec(ctx, nodes[0].String(), tool...)
		if err != nil {
			t.Fatalf("the node image lacks %s: %v", tool[0], err)
		}
		t.Logf("FIGURE node tool: %s", strings.TrimSpace(out))
	}
	runner, err := chaos.LoadRunner(ctx, c, root) // loaded already by the stage: this finds it
	if err != nil {
		t.Fatal(err)
	}
	settings, err := chaos.LoadSettings(root + "/" + chaos.SettingsFile)
	if err != nil {
		t.Fatal(err)
	}
	defs, err := chaos.LoadDefinitions(root + "/" + chaos.PlatformDir)
	if err != nil {
		t.Fatal(err)
	}
	engines := root + "/infra/" + settings.Environments[0].Engines
	all, err := chaos.LoadEngines(engines, defs)
	if err != nil {
		t.Fatal(err)
	}
	var exps []chaos.Experiment
	for _, e := range all {
		if _, ok := want[e.Engine]; ok {
			exps = append(exps, e)
		}
	}
	opts := chaos.Options{Config: cfg, Definitions: defs, ChaosNamespace: settings.ChaosNamespace,
		PlatformDir: root + "/" + chaos.PlatformDir, EnginesDir: engines, RunnerImage: runner, NodeExec: exec, Progress: &progress}
	if rep.Executor != chaos.ExecutorDarkTower || !strings.Contains(table.String(), "executor: darktower (Litmus is not installed in this cluster)") {
		t.Errorf("executor line: %s", rep.ExecutorLine())
	}
	for _, e := range rep.Experiments {
		if e.Verdict != want[e.Engine] {
			t.Errorf("%s: verdict %s, want %s: %s\ninjections: %v", e.Engine, e.Verdict, want[e.Engine], e.Reason, e.Injections)
		}
		if !e.Injected {
			t.Errorf("%s: nothing injected", e.Engine)
		}
		t.Logf("%s injections: %s", e.Engine, strings.Join(e.Injections, "; "))
	}
	// The experiments ran under the stage's load; what it counted.
	if !strings.Contains(progress.String(), "load: darktower-load running in preview") {
		t.Error("the chaos stage did not say it started its load")
	}
	for _, q := range []string{`sum by (target, outcome) (max_over_time(darktower_load_requests_total[15m]))`,
		`sum by (outcome) (max_over_time(darktower_load_datagrams_total[15m]))`, `sum(max_over_time(darktower_load_media_rejoins_total[15m]))`} {
		samples, err := deploy.PrometheusQuery(ctx, client, q)
		if err != nil || len(samples) == 0 {
			t.Errorf("%s: %v (no load counted?)", q, err)
			continue
		}
		var line []string
		for _, s := range samples {
			line = append(line, fmt.Sprintf("%v=%g", s.Metric, s.Value))
		}
		t.Logf("FIGURE load during the stage: %s", strings.Join(line, " "))
	}
	// The faults were real. MH's containers were killed and restarted in
	// place; the pod cut off the network failed the kubelet's probes (the
	// kubelet reaches it over eth0 too); Redis's pods are new.
	mh, err := client.Typed.CoreV1().Pods("preview").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=media-handler"})
	if err != nil {
		t.Fatal(err)
	}
	var restarts int32
	for _, p := range mh.Items {
		for _, s := range p.Status.ContainerStatuses {
			restarts += s.RestartCount
		}
	}
	if restarts == 0 {
		t.Error("container-kill: no media-handler container was restarted")
	}
	t.Logf("FIGURE container-kill: media-handler containers restarted %d time(s) in all", restarts)
	for _, e := range rep.Experiments {
		if e.Fault != "pod-network-loss" {
			continue
		}
		events, err := client.Typed.CoreV1().Events("preview").List(ctx, metav1.ListOptions{FieldSelector: "reason=Unhealthy"})
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, ev := range events.Items {
			for _, inj := range e.Injections {
				if strings.HasSuffix(inj, " of "+ev.InvolvedObject.Name) && strings.Contains(ev.Message, "exceeded") {
					seen = append(seen, fmt.Sprintf("%s ×%d: %s", ev.InvolvedObject.Name, ev.Count, ev.Message))
				}
			}
		}
		if len(seen) == 0 {
			t.Error("pod-network-loss: the target's probes never timed out: was anything dropped?")
		}
		t.Logf("FIGURE pod-network-loss: the kubelet's probes of the cut-off pod timed out: %s", strings.Join(seen, "; "))
	}
	// The network loss was removed: every MC pod is Ready again.
	if err := kindcluster.WaitPodsReady(ctx, client.Typed, "preview", "app.kubernetes.io/name=meeting-controller", 2*time.Minute); err != nil {
		t.Errorf("after the network loss: %v", err)
	}
	junit, err := os.ReadFile(filepath.Join(dist, flow.ChaosJUnitFile))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Suites []struct {
			Tests int `xml:"tests,attr"`
			Cases []struct {
				Name string `xml:"name,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(junit, &parsed); err != nil || len(parsed.Suites) != 1 || len(parsed.Suites[0].Cases) != len(exps) {
		t.Errorf("JUnit: %v\n%s", err, junit)
	}
	summary, err := os.ReadFile(filepath.Join(dist, build.SummaryFile))
	if err != nil || !strings.Contains(string(summary), "ac-service-pod-delete") || !strings.Contains(string(summary), "| chaos | passed |") {
		t.Errorf("summary.md lacks the chaos section or check: %v\n%s", err, summary)
	}

	// The negative proof: probes that cannot pass fail the experiment,
	// with the reason. A pod-delete of GC judged by an httpProbe on a port
	// GC's Service does not have (refused) and by a k8sProbe that wants
	// pods that do not exist — next to a promProbe that holds (GC's scrape
	// targets up), judged Passed while the experiment fails; and an engine
	// with a cmdProbe, which this executor refuses before injecting.
	var gc chaos.Experiment
	for _, e := range exps {
		if e.Engine == "global-controller-pod-delete" {
			gc = e
		}
	}
	bad := gc
	bad.Engine = "negative-proof"
	http := gc.Probes[0]
	http.Name, http.Mode, http.URL = "never-answers", chaos.EOT, "http://global-controller.preview.svc:8081/ready"
	http.Run.Retry = 2
	k8s := chaos.Probe{Name: "nothing-there", Type: "k8sProbe", Mode: chaos.EOT, Resource: "v1/pods", Namespace: "preview",
		LabelSelector: "app.kubernetes.io/name=no-such-service", Operation: "present", Run: chaos.RunProperties{ProbeTimeout: 2 * time.Second, Interval: time.Second, Retry: 2}}
	prom := chaos.Probe{Name: "gc-scraped", Type: "promProbe", Mode: chaos.EOT, Endpoint: "http://prometheus.monitoring.svc:9090",
		Query: `sum(up{job="global-controller"})`, Comparator: ">=", Value: "1", Run: chaos.RunProperties{ProbeTimeout: 5 * time.Second, Interval: 5 * time.Second, Retry: 6}}
	bad.Probes = []chaos.Probe{http, k8s, prom}
	cmd := gc
	cmd.Engine = "cmd-probe"
	cmd.Probes = []chaos.Probe{{Name: "a-command", Type: "cmdProbe", Mode: chaos.EOT}}
	opts.Experiments, opts.Duration, opts.Interval = []chaos.Experiment{bad, cmd}, 10*time.Second, 10*time.Second
	rep, _ = runChaos(ctx, t, opts, "negative proof")
	if !rep.Failed() || len(rep.Experiments) != 2 {
		t.Fatalf("negative proof passed: %+v", rep.Experiments)
	}
	neg, refused := rep.Experiments[0], rep.Experiments[1]
	if neg.Verdict != chaos.VerdictFail || !neg.Injected || !strings.Contains(neg.Reason, "probe never-answers Failed") ||
		!strings.Contains(neg.Reason, "no answer") || !strings.Contains(neg.Reason, "probe nothing-there Failed") || !strings.Contains(neg.Reason, "want present") {
		t.Errorf("negative proof: %s: %s", neg.Verdict, neg.Reason)
	}
	if len(neg.Probes) != 3 || neg.Probes[2].Verdict != chaos.Passed || strings.Contains(neg.Reason, "gc-scraped") {
		t.Errorf("promProbe: %+v", neg.Probes)
	}
	if refused.Verdict != chaos.VerdictError || refused.Injected || !strings.Contains(refused.Reason, "not supported by the pipeline's executor") {
		t.Errorf("cmdProbe: %s: %s", refused.Verdict, refused.Reason)
	}

	fragileBuildFailsTheRightExperiment(ctx, t, root, dbDir, pr, state, c, &progress)
}

// fragileBuildFailsTheRightExperiment deploys a test build made with
// --go-tags chaosfragile (meeting-controller never recovers from a Redis
// outage; ac-service replaces its signing key at every start) over the
// same preview and runs the experiments those knobs touch: exactly the
// Redis outage fails, naming meeting-controller's readiness after it, and
// ac-service's pod-delete, naming the kid probe; the pod-deletes of
// global-controller and meeting-controller still pass. The healthy
// build's binaries carry no tags.
func fragileBuildFailsTheRightExperiment(ctx context.Context, t *testing.T, root, dbDir string, pr int, state string,
	c *kindcluster.Cluster, progress io.Writer) {
	t.Helper()
	fragile := t.TempDir()
	start := time.Now()
	m, err := flow.BuildAll(ctx, flow.BuildAllOptions{Root: root, Out: fragile, Base: build.BaseSkeleton,
		Platforms: []string{"linux/amd64"}, Version: "0.0.0-chaos-fragile", SourceURL: "https://example.com/src",
		VulnDB: dbDir, NoSign: true, GoTags: []string{"chaosfragile"}, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.GoTags, []string{"chaosfragile"}) {
		t.Fatalf("the fragile build's manifest records go tags %v", m.GoTags)
	}
	for _, svc := range []string{"ac-service", "meeting-controller"} {
		if got := goTagsOf(t, fragile, svc); got != "chaosfragile" {
			t.Fatalf("the fragile build's %s was built with -tags %q", svc, got)
		}
	}
	t.Logf("FIGURE build-all --go-tags chaosfragile in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	if _, _, err := preview.Up(ctx, preview.Options{PR: pr, Commit: "fedcba9876543210fedcba9876543210fedcba98", Root: root, Dist: fragile,
		NodeImage: kindcluster.NodeImageBuilt, StateDir: state, Progress: progress}); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE the fragile build deployed over the preview in %s", time.Since(start).Round(100*time.Millisecond))
	// What must fail, and by which probe; the rest must pass.
	catches := map[string]string{
		"redis-pod-delete":      "meeting-controller-ready-after",
		"ac-service-pod-delete": "signing-key-unchanged",
	}
	// The stage as ci runs it (under its load), on these engines.
	start = time.Now()
	var out bytes.Buffer
	rep, err := chaos.RunStage(ctx, chaos.StageOptions{Root: root, Cluster: c, Progress: io.MultiWriter(progress, &out),
		Only:     []string{"ac-service-pod-delete", "global-controller-pod-delete", "redis-pod-delete"},
		Duration: 20 * time.Second, Interval: 20 * time.Second})
	if !errors.Is(err, chaos.ErrExperimentsFailed) || rep == nil {
		t.Fatalf("the stage on the fragile build: err = %v, want experiments failed", err)
	}
	var table bytes.Buffer
	rep.Table(&table)
	t.Logf("FIGURE chaos stage on the chaosfragile build (3 engines, 20 s / 20 s) in %s:\n%s", time.Since(start).Round(100*time.Millisecond), table.String())
	for _, e := range rep.Experiments {
		want := chaos.VerdictPass
		if _, ok := catches[e.Engine]; ok {
			want = chaos.VerdictFail
		}
		if e.Verdict != want {
			t.Errorf("fragile build, %s: verdict %s, want %s: %s", e.Engine, e.Verdict, want, e.Reason)
		}
		if probe, ok := catches[e.Engine]; ok && !strings.Contains(e.Reason, probe) {
			t.Errorf("fragile build, %s fails for another reason than probe %s: %s", e.Engine, probe, e.Reason)
		}
	}
}

// runChaos runs opts, logs the report's table as a figure and returns both.
func runChaos(ctx context.Context, t *testing.T, opts chaos.Options, what string) (*chaos.Report, string) {
	t.Helper()
	start := time.Now()
	rep, err := chaos.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	rep.Table(&table)
	t.Logf("FIGURE %s in %s:\n%s", what, time.Since(start).Round(100*time.Millisecond), table.String())
	return rep, table.String()
}

// goTagsOf reads the -tags build setting of service's binary in a build's
// OCI layout (debug/buildinfo: what `go version -m` shows).
func goTagsOf(t *testing.T, dist, service string) string {
	t.Helper()
	bm, err := build.ReadManifest(filepath.Join(dist, build.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(filepath.Join(dist, build.LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range bm.Images {
		if img.Service != service {
			continue
		}
		// The layout's index holds each service's index, which holds its
		// platform images.
		ih, err := v1.NewHash(img.Digest)
		if err != nil {
			t.Fatal(err)
		}
		h, err := v1.NewHash(img.Platforms[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		svcIdx, err := idx.ImageIndex(ih)
		if err != nil {
			t.Fatal(err)
		}
		image, err := svcIdx.Image(h)
		if err != nil {
			t.Fatal(err)
		}
		rc := mutate.Extract(image)
		defer rc.Close()
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if err != nil {
				t.Fatalf("no %s binary in its image: %v", service, err)
			}
			if path.Base(hdr.Name) != service || hdr.Typeflag != tar.TypeReg {
				continue
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			info, err := buildinfo.Read(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range info.Settings {
				if s.Key == "-tags" {
					return s.Value
				}
			}
			return ""
		}
	}
	t.Fatalf("no %s in %s", service, dist)
	return ""
}
