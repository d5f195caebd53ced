package kindcluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/validate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// golden is policy/testdata/reachability-preview.json: the matrix the
// policy tests compute from the rendered NetworkPolicies.
type golden struct {
	Overlays []string `json:"overlays"`
	Peers    []struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"peers"`
	Ports   []string `json:"ports"`
	Allowed []string `json:"allowed"`
}

// The preview overlay's NetworkPolicies (and the data namespace's),
// applied as rendered to the real cluster, judged on real packets: a
// probe pod stands in for each peer with that peer's labels, every peer
// tries every other on every port, and the measured matrix must equal the
// one the policy tests compute.
func TestNetworkPolicyMatrixMeasuredEqualsComputed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	raw, err := os.ReadFile(filepath.Join(kindtest.RepoRoot(t), "policy/testdata/reachability-preview.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want golden
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	c := realCluster(t)
	client, cfg, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	cs := client.Typed

	// Namespaces and NetworkPolicies exactly as rendered; the workloads
	// are stood in for by the probes.
	var objs []*unstructured.Unstructured
	for _, overlay := range want.Overlays {
		rendered, err := validate.Render(filepath.Join(kindtest.RepoRoot(t), "infra", overlay))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range rendered {
			if o.GetKind() == "Namespace" || o.GetKind() == "NetworkPolicy" {
				objs = append(objs, o)
			}
		}
	}
	t.Cleanup(func() {
		// Leave the shared cluster as it was, whatever happened.
		if os.Getenv("DARKTOWER_KEEP_TEST_CLUSTER") != "" {
			return
		}
		bg := context.Background()
		var names []string
		for _, o := range objs {
			if o.GetKind() == "Namespace" {
				names = append(names, o.GetName())
			}
		}
		for _, p := range want.Peers {
			client.Typed.CoreV1().Pods(p.Namespace).Delete(bg, "probe-"+p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
		client.RemoveNamespaces(bg, append(names, "monitoring"), 2*time.Minute)
	})
	for _, r := range client.Apply(ctx, objs, false) {
		if r.Err != nil {
			t.Fatalf("applying %s: %v", r.Object, r.Err)
		}
	}
	start := time.Now()
	for _, p := range want.Peers {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		pod := kindtest.ProbePod(p.Namespace, "probe-"+p.Name, p.Labels)
		pod.Labels["darktower.io/probe"] = "matrix"
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("probe for %s: %v", p.Name, err)
		}
	}
	ips := map[string]string{}
	for _, p := range want.Peers {
		if err := kindcluster.WaitPodsReady(ctx, cs, p.Namespace, "darktower.io/probe=matrix", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		pod, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, "probe-"+p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ips[p.Name] = pod.Status.PodIP
	}
	t.Logf("FIGURE %d probe pods Ready in %s", len(want.Peers), time.Since(start).Round(100*time.Millisecond))

	// Wait until the policies are in force: the stranger must be refused
	// by ac-service, which only global-controller may call.
	stranger, ac := "", ""
	for _, p := range want.Peers {
		switch p.Name {
		case "stranger":
			stranger = p.Namespace
		case "ac-service":
			ac = ips[p.Name]
		}
	}
	enforced := time.Now()
	for {
		out, _ := kindtest.Exec(ctx, cfg, cs, stranger, "probe-stranger", "netprobe", "matrix", "--timeout", "2s", "tcp/"+ac+":443")
		if strings.Contains(out, " blocked") {
			break
		}
		if time.Since(enforced) > time.Minute {
			t.Fatalf("the rendered policies were not enforced within a minute (stranger → ac-service: %q)", out)
		}
	}

	// Every source probes every target at once, all sources in parallel.
	// A dropped packet never connects, so a flow seen reached even once is
	// allowed; but on this loaded 2-core machine an allowed connection can
	// miss a short timeout, so an allowed flow counts as reached if any
	// round reaches it. Rounds run until every computed flow has been seen
	// (bounded), then two more: no disallowed flow may be reached in any.
	measure := func() []string {
		var (
			mu  sync.Mutex
			got []string
			wg  sync.WaitGroup
		)
		for _, from := range want.Peers {
			var targets []string
			label := map[string]string{}
			for _, to := range want.Peers {
				if to.Name == from.Name || to.Name == "prometheus" || to.Name == "stranger" {
					continue
				}
				for _, port := range want.Ports {
					proto, num, _ := strings.Cut(port, "/")
					target := fmt.Sprintf("%s/%s:%s", strings.ToLower(proto), ips[to.Name], num)
					targets = append(targets, target)
					label[target] = fmt.Sprintf("%s -> %s %s", from.Name, to.Name, port)
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := kindtest.Exec(ctx, cfg, cs, from.Namespace, "probe-"+from.Name,
					append([]string{"netprobe", "matrix", "--timeout", "3s"}, targets...)...)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					target, verdict, _ := strings.Cut(line, " ")
					switch {
					case verdict == "ok":
						got = append(got, label[target])
					case verdict != "blocked":
						t.Errorf("probe from %s: %s", from.Name, line)
					}
				}
			}()
		}
		wg.Wait()
		sort.Strings(got)
		return got
	}
	seen := map[string]int{}
	rounds, extraRounds := 0, 0
	var settled time.Duration
	for extraRounds < 2 && time.Since(start) < 4*time.Minute {
		roundStart := time.Now()
		got := measure()
		rounds++
		for _, f := range got {
			seen[f]++
		}
		if settled == 0 && len(intersect(keys(seen), want.Allowed)) == len(want.Allowed) {
			settled = time.Since(start)
		} else if settled != 0 {
			extraRounds++
		}
		t.Logf("FIGURE matrix round %d: %d of %d allowed flows reached, %d in all, in %s", rounds,
			len(intersect(got, want.Allowed)), len(want.Allowed), len(got), time.Since(roundStart).Round(100*time.Millisecond))
	}
	if settled != 0 {
		t.Logf("FIGURE every computed flow measured reachable %s after the probes were created", settled.Round(100*time.Millisecond))
	}
	got := keys(seen)
	t.Logf("measured reachability (preview overlay, kube-router on a real node), %d flows:\n  %s", len(got), strings.Join(got, "\n  "))
	for _, f := range got {
		if !slices.Contains(want.Allowed, f) {
			t.Errorf("measured but not allowed by the computed matrix: %s", f)
		}
	}
	for _, f := range want.Allowed {
		if !slices.Contains(got, f) {
			t.Errorf("allowed by the computed matrix but blocked on the cluster: %s", f)
		}
	}
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func intersect(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}
