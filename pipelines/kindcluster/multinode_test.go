package kindcluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestMultiNodeCluster brings up infra/local's own topology (a control
// plane and the two pools' workers, the media one tainted) on the node
// image built here, and shows what a one-node cluster cannot: pods on
// different nodes reach each other over kube-router's routes, by pod IP and
// through a Service, on TCP and UDP, and a NetworkPolicy holds across
// nodes.
func TestMultiNodeCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	state := t.TempDir()
	name := fmt.Sprintf("dt-multi-%d", time.Now().UnixNano()%1_000_000_000)
	start := time.Now()
	var log strings.Builder
	c, err := kindcluster.Up(ctx, kindcluster.Options{Name: name, StateDir: state, Nodes: 0, NoHostPorts: true,
		ConfigPath: filepath.Join(kindtest.RepoRoot(t), "infra/local/kind-config.yaml"),
		NodeImage:  kindcluster.NodeImageBuilt, Progress: &log})
	t.Cleanup(func() {
		if os.Getenv("DARKTOWER_KEEP_TEST_CLUSTER") != "" {
			t.Logf("cluster %s kept", name)
			return
		}
		_ = kindcluster.Down(context.Background(), name, state, nil)
	})
	if err != nil {
		t.Fatalf("a multi-node cluster could not be made on this machine: %v\n%s", err, log.String())
	}
	client, cfg, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	cs := client.Typed
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) < 3 {
		t.Fatalf("%d nodes, want infra/local's three", len(nodes.Items))
	}
	t.Logf("FIGURE multi-node cluster up (%d nodes Ready) in %s", len(nodes.Items), time.Since(start).Round(100*time.Millisecond))
	if err := kindcluster.WaitSystemReady(ctx, cs, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE multi-node: system pods Ready %s after start", time.Since(start).Round(100*time.Millisecond))
	if err := kindtest.LoadProbe(ctx, c, kindtest.RepoRoot(t)); err != nil {
		t.Fatal(err)
	}

	// The server on one node, the two clients on the two others.
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	ns := "probe"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	placed := map[string]string{"server": names[1], "allowed": names[2], "other": names[0]}
	for pod, node := range placed {
		p := kindtest.ProbePod(ns, pod, map[string]string{"app": pod})
		p.Spec.NodeName = node
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kindcluster.WaitPodsReady(ctx, cs, ns, "app", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	server, reach, dns, _ := serveProbes(ctx, t, cs, cfg, ns)
	for _, from := range []string{"allowed", "other"} {
		for _, target := range []struct{ proto, addr string }{
			{"tcp", server.Status.PodIP + ":443"}, {"udp", server.Status.PodIP + ":443"}, {"udp", dns + ":443"},
		} {
			if err := reach(from, target.proto, target.addr); err != nil {
				t.Fatalf("%s (node %s) → server (node %s) %s %s, no policy: %v", from, placed[from], placed["server"], target.proto, target.addr, err)
			}
		}
	}
	t.Logf("FIGURE multi-node: pods on %s and %s reach a pod on %s by pod IP and Service, TCP and UDP", placed["allowed"], placed["other"], placed["server"])

	denyAllButAllowedOn443(ctx, t, cs, ns)
	enforced := time.Now()
	for reach("other", "tcp", server.Status.PodIP+":443") == nil {
		if time.Since(enforced) > time.Minute {
			t.Fatal("a default-deny NetworkPolicy was not enforced across nodes within 1 minute")
		}
	}
	for _, tc := range []struct {
		from, proto string
		want        bool
	}{{"allowed", "tcp", true}, {"allowed", "udp", true}, {"other", "tcp", false}, {"other", "udp", false}} {
		err := reach(tc.from, tc.proto, server.Status.PodIP+":443")
		if (err == nil) != tc.want {
			t.Errorf("%s → server %s across nodes: reached=%v, want %v (%v)", tc.from, tc.proto, err == nil, tc.want, err)
		}
	}
	t.Logf("FIGURE multi-node: NetworkPolicy enforced across nodes %s after it was created", time.Since(enforced).Round(100*time.Millisecond))
}
