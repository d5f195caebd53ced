package kindcluster_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/internal/kindtest"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/nodeimage"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	kindconfig "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

// The ADR's kind config decodes, and nodes=1 folds its three nodes into
// one control plane carrying the media pool's label and its port mapping.
func TestAdaptFoldsThePoolsIntoOneNode(t *testing.T) {
	cfg, err := kindcluster.LoadConfig(filepath.Join(kindtest.RepoRoot(t), "infra/local/kind-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Nodes) != 3 {
		t.Fatalf("infra/local/kind-config.yaml has %d nodes, want 3", len(cfg.Nodes))
	}
	kindcluster.Adapt(cfg, 1, true)
	if len(cfg.Nodes) != 1 || cfg.Nodes[0].Role != kindconfig.ControlPlaneRole {
		t.Fatalf("nodes after folding: %+v", cfg.Nodes)
	}
	n := cfg.Nodes[0]
	if n.Labels["darktower.io/pool"] != "media" || n.Image != "" {
		t.Errorf("labels %v image %q", n.Labels, n.Image)
	}
	if len(n.ExtraPortMappings) != 1 || n.ExtraPortMappings[0].ContainerPort != 30443 {
		t.Errorf("port mappings %+v", n.ExtraPortMappings)
	}
	patches := strings.Join(cfg.KubeadmConfigPatches, "\n")
	if !strings.Contains(patches, nodeimage.EtcdImageTag) || !strings.Contains(patches, nodeimage.CoreDNSImageTag) {
		t.Errorf("a built node image's etcd/CoreDNS tags are not patched into kubeadm's config: %s", patches)
	}
}

// Without a built node image the config keeps its nodes and kubeadm its
// own image tags.
func TestAdaptKeepsTheConfigForUpstreamImages(t *testing.T) {
	cfg, err := kindcluster.LoadConfig(filepath.Join(kindtest.RepoRoot(t), "infra/local/kind-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kindcluster.Adapt(cfg, 0, false)
	if len(cfg.Nodes) != 3 || len(cfg.KubeadmConfigPatches) != 0 {
		t.Fatalf("nodes %d, patches %v", len(cfg.Nodes), cfg.KubeadmConfigPatches)
	}
}

func TestLoadConfigNamesABadField(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "kind.yaml")
	os.WriteFile(bad, []byte("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n"), 0o644)
	_, err := kindcluster.LoadConfig(bad)
	if err == nil || !strings.Contains(err.Error(), "nodez") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("want an error naming the file and the field, got %v", err)
	}
}

// shared is the one real cluster this package's tests use, created on
// first use and deleted by TestMain.
var shared struct {
	once    sync.Once
	c       *kindcluster.Cluster
	err     error
	state   string
	started time.Time
	log     bytes.Buffer
}

func TestMain(m *testing.M) {
	release, err := kindtest.ClusterTurn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	defer release()
	if shared.c != nil && os.Getenv("DARKTOWER_KEEP_TEST_CLUSTER") != "" {
		fmt.Fprintf(os.Stderr, "DARKTOWER_KEEP_TEST_CLUSTER: cluster %s kept; export KUBECONFIG=%s\n", shared.c.Name, shared.c.Kubeconfig)
		os.Exit(code)
	}
	if shared.c != nil {
		if err := kindcluster.Down(context.Background(), shared.c.Name, shared.state, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "cluster down:", err)
			code = 1
		}
		os.RemoveAll(shared.state)
	}
	os.Exit(code)
}

// realCluster creates (once) a one-node kind cluster on the node image
// built here. A machine that cannot run it fails the test with the reason.
func realCluster(t *testing.T) *kindcluster.Cluster {
	t.Helper()
	shared.once.Do(func() {
		shared.started = time.Now()
		shared.state, shared.err = os.MkdirTemp("", "kindcluster-test-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		defer cancel()
		// Unique per run (PIDs repeat across CI containers): never a cluster
		// someone kept.
		name := fmt.Sprintf("dt-test-%d", time.Now().UnixNano()%1_000_000_000)
		shared.c, shared.err = kindcluster.Up(ctx, kindcluster.Options{Name: name, StateDir: shared.state, Nodes: 1, NoHostPorts: true,
			ConfigPath: filepath.Join(kindtest.RepoRoot(t), "infra/local/kind-config.yaml"),
			NodeImage:  kindcluster.NodeImageBuilt, Progress: &shared.log})
		if shared.err != nil {
			shared.c = nil
			return
		}
		for _, s := range shared.c.Steps {
			t.Logf("FIGURE %s: %s", s.Name, s.Duration.Round(100*time.Millisecond))
		}
		t.Logf("FIGURE cluster up (node image included) in %s", time.Since(shared.started).Round(100*time.Millisecond))
		cs, _, err := shared.c.Client()
		if err != nil {
			shared.err = err
			return
		}
		if shared.err = kindcluster.WaitSystemReady(ctx, cs.Typed, 3*time.Minute); shared.err != nil {
			return
		}
		t.Logf("FIGURE system pods Ready %s after start", time.Since(shared.started).Round(100*time.Millisecond))
		shared.err = kindtest.LoadProbe(ctx, shared.c, kindtest.RepoRoot(t))
	})
	if shared.err != nil {
		t.Fatalf("the real cluster could not be made on this machine: %v\n%s", shared.err, shared.log.String())
	}
	return shared.c
}

// TestRealCluster checks what the platform relies on: cluster DNS and
// Service routing through kube-proxy, NetworkPolicy enforced by
// kube-router on real TCP and UDP packets, a volume from the default
// StorageClass, and the status and list commands.
func TestRealCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := realCluster(t)
	name := c.Name
	client, cfg, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	cs := client.Typed

	ns := "probe"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{
		kindtest.ProbePod(ns, "server", map[string]string{"app": "server"}),
		kindtest.ProbePod(ns, "allowed", map[string]string{"app": "allowed"}),
		kindtest.ProbePod(ns, "other", map[string]string{"app": "other"}),
	} {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kindcluster.WaitPodsReady(ctx, cs, ns, "app", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	server, reach, dns, routedIn := serveProbes(ctx, t, cs, cfg, ns)
	t.Logf("FIGURE a new Service routed %s after creation", routedIn.Round(100*time.Millisecond))
	for _, target := range []struct{ proto, addr string }{
		{"tcp", server.Status.PodIP + ":443"}, {"udp", server.Status.PodIP + ":443"},
		{"tcp", dns + ":443"}, {"tcp", dns + ":8080"}, {"udp", dns + ":443"},
	} {
		if err := reach("other", target.proto, target.addr); err != nil {
			t.Fatalf("without any NetworkPolicy: %v", err)
		}
	}

	// Default-deny ingress, then allow only "allowed" on TCP 443 and UDP 443.
	denyAllButAllowedOn443(ctx, t, cs, ns)
	enforced := time.Now()
	// kube-router syncs policies asynchronously: wait until the denial holds.
	for {
		if reach("other", "tcp", server.Status.PodIP+":443") != nil {
			break
		}
		if time.Since(enforced) > time.Minute {
			t.Fatal("a default-deny NetworkPolicy was not enforced within 1 minute: kube-router does not filter on this node")
		}
	}
	t.Logf("FIGURE NetworkPolicy enforced %s after it was created", time.Since(enforced).Round(100*time.Millisecond))
	cases := []struct {
		from, proto, addr string
		want              bool
	}{
		{"allowed", "tcp", server.Status.PodIP + ":443", true},
		{"allowed", "udp", server.Status.PodIP + ":443", true},
		{"allowed", "tcp", dns + ":443", true},
		{"allowed", "tcp", server.Status.PodIP + ":8080", false},
		{"other", "tcp", server.Status.PodIP + ":443", false},
		{"other", "udp", server.Status.PodIP + ":443", false},
		{"other", "tcp", dns + ":8080", false},
	}
	for _, tc := range cases {
		err := reach(tc.from, tc.proto, tc.addr)
		if (err == nil) != tc.want {
			t.Errorf("%s → %s %s: reached=%v, want %v (%v)", tc.from, tc.proto, tc.addr, err == nil, tc.want, err)
		}
	}

	// A volume from the default StorageClass (local-path-provisioner).
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Mi")}}}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	writer := kindtest.ProbePod(ns, "writer", map[string]string{"app": "writer"})
	writer.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
	writer.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, writer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kindcluster.WaitPodsReady(ctx, cs, ns, "app=writer", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Fatalf("claim not bound: %v %v", pvc.Status.Phase, err)
	}

	// Status reports the node running on the built image.
	nodes, err := kindcluster.Status(ctx, name)
	if err != nil || len(nodes) != 1 || nodes[0].State != "running" || !strings.HasPrefix(nodes[0].Image, nodeimage.Repository) {
		t.Fatalf("status: %+v %v", nodes, err)
	}
	names, err := kindcluster.List(ctx)
	if err != nil || !contains(names, name) {
		t.Fatalf("list %v does not name %s: %v", names, name, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// serveProbes puts the Service "server" (TCP and UDP 443, TCP 8080) in
// front of the probe pod "server" in ns and waits until kube-proxy routes
// it (it syncs asynchronously) from the probe pod "other". reach runs
// `netprobe connect` in a probe pod.
func serveProbes(ctx context.Context, t *testing.T, cs kubernetes.Interface, cfg *rest.Config, ns string) (
	server *corev1.Pod, reach func(from, proto, target string) error, dns string, routedIn time.Duration) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "server", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"}, Ports: []corev1.ServicePort{
			{Name: "https", Port: 443, TargetPort: intstr.FromInt32(443), Protocol: corev1.ProtocolTCP},
			{Name: "media", Port: 443, TargetPort: intstr.FromInt32(443), Protocol: corev1.ProtocolUDP},
			{Name: "ops", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	server, err := cs.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reach = func(from, proto, target string) error {
		_, err := kindtest.Exec(ctx, cfg, cs, ns, from, "netprobe", "connect", "--"+proto, target, "--timeout", "3s")
		return err
	}
	dns = "server." + ns + ".svc.cluster.local"
	start := time.Now()
	for reach("other", "tcp", dns+":443") != nil {
		if time.Since(start) > time.Minute {
			t.Fatalf("Service %s not reachable from pod other within a minute: %v", dns, reach("other", "tcp", dns+":443"))
		}
		time.Sleep(time.Second)
	}
	return server, reach, dns, time.Since(start)
}

// denyAllButAllowedOn443: default-deny ingress in ns, then only the pod
// "allowed" may reach "server", on TCP and UDP 443.
func denyAllButAllowedOn443(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port443 := intstr.FromInt32(443)
	for _, p := range []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "default-deny", Namespace: ns},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "allow-443", Namespace: ns},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "allowed"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port443}, {Protocol: &udp, Port: &port443}}}}}},
	} {
		if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
