package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/devsecrets"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/validate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func root(t testing.TB) string {
	r, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every ExternalSecret of the preview overlay and the data namespace is
// realized from dev-secrets, with the store's key and property each names.
func TestRealizeExternalSecretsCoversThePreviewOverlay(t *testing.T) {
	var objs []*unstructured.Unstructured
	for _, dir := range []string{"overlays/preview", "platform/database"} {
		r, err := validate.Render(filepath.Join(root(t), "infra", dir))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, r...)
	}
	local, err := devsecrets.Generate(devsecrets.Options{Namespace: "dark-tower-local-secrets", ServiceNamespaces: []string{"preview"}, DataNamespace: deploy.DataNamespace})
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := deploy.RealizeExternalSecrets(objs, local)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*corev1.Secret{}
	for _, s := range secrets {
		byName[s.Namespace+"/"+s.Name] = s
	}
	tls := byName["preview/ac-service-tls"]
	if tls == nil || tls.Type != corev1.SecretTypeTLS || !strings.Contains(tls.StringData["ca.crt"], "BEGIN CERTIFICATE") || tls.StringData["tls.key"] == "" {
		t.Fatalf("ac-service-tls not realized as a TLS secret with its CA: %+v", tls)
	}
	if pg := byName[deploy.DataNamespace+"/dark-tower-pg-ac"]; pg == nil || pg.StringData["username"] != "ac" || pg.StringData["password"] == "" {
		t.Fatalf("dark-tower-pg-ac: %+v", pg)
	}
	// A reference the store cannot answer names the ExternalSecret.
	_, err = deploy.RealizeExternalSecrets(objs, local[1:])
	if err == nil || !strings.Contains(err.Error(), "ExternalSecret") {
		t.Fatalf("want an error naming the ExternalSecret, got %v", err)
	}
}

// The preview overlay deployed from a fresh build-all onto a real
// one-node cluster: every workload Ready (PostgreSQL and Redis from
// Debian's packages, the four services with the ADR's probes), a deleted
// pod of each service replaced and Ready, and a Redis outage turning
// meeting-controller unready, then ready again without a restart.
func TestPreviewOverlayRunsOnARealCluster(t *testing.T) {
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
	if _, err := flow.BuildAll(ctx, flow.BuildAllOptions{Root: root(t), Out: dist, Base: build.BaseSkeleton,
		Platforms: []string{"linux/amd64"}, Version: "0.0.0-preview-test", SourceURL: "https://example.com/src",
		VulnDB: dbDir, NoSign: true, Progress: &progress}); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE build-all (4 services, linux/amd64) in %s", time.Since(start).Round(100*time.Millisecond))

	state := t.TempDir()
	name := fmt.Sprintf("dt-deploy-%d", os.Getpid()%100000)
	start = time.Now()
	c, err := kindcluster.Up(ctx, kindcluster.Options{Name: name, StateDir: state, Nodes: 1, NoHostPorts: true,
		ConfigPath: filepath.Join(root(t), "infra/local/kind-config.yaml"), NodeImage: kindcluster.NodeImageBuilt, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("DARKTOWER_KEEP_TEST_CLUSTER") != "" {
			t.Logf("cluster %s kept: export KUBECONFIG=%s", name, c.Kubeconfig)
			return
		}
		kindcluster.Down(context.Background(), name, state, nil)
	})
	cfg, err := c.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	client, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := kindcluster.WaitSystemReady(ctx, client.Typed, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE cluster up, system pods Ready, in %s", time.Since(start).Round(100*time.Millisecond))

	start = time.Now()
	res, err := deploy.Up(ctx, deploy.Options{Cluster: c, Client: client, Root: root(t), Dist: dist,
		Overlay: "overlays/preview", Progress: &progress})
	if err != nil {
		pods, _ := client.Typed.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			if !kindcluster.Ready(&p) {
				t.Logf("not ready: %s/%s %s", p.Namespace, p.Name, p.Status.Phase)
			}
		}
		t.Fatal(err)
	}
	for _, s := range res.Steps {
		t.Logf("FIGURE deploy: %s: %s", s.Name, s.Duration.Round(100*time.Millisecond))
	}
	t.Logf("FIGURE deploy (images loaded, data stores, secrets, overlay applied, every workload Ready) in %s", time.Since(start).Round(100*time.Millisecond))

	ns := res.Namespace
	for _, w := range res.Workloads {
		if w.Namespace != ns {
			continue
		}
		sel := "app.kubernetes.io/name=" + w.Name
		start := time.Now()
		victim, err := client.DeleteOnePod(ctx, ns, sel, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := client.WaitReady(ctx, []cluster.Workload{w}, 3*time.Minute); err != nil {
			t.Fatalf("after deleting %s: %v", victim, err)
		}
		t.Logf("FIGURE %s: pod %s deleted, replaced and Ready in %s", w.Name, victim, time.Since(start).Round(100*time.Millisecond))
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
	start = time.Now()
	if err := client.DeleteByLabel(ctx, deploy.DataNamespace, "app.kubernetes.io/name=redis-cluster", new(int64)); err != nil {
		t.Fatal(err)
	}
	sawUnready := false
	for time.Since(start) < 2*time.Minute && !sawUnready {
		notReady, _ := client.NotReadyPods(ctx, ns, mcSel)
		sawUnready = len(notReady) > 0
		time.Sleep(500 * time.Millisecond)
	}
	if !sawUnready {
		t.Fatal("meeting-controller stayed ready while Redis was gone")
	}
	t.Logf("FIGURE meeting-controller unready %s after Redis was deleted", time.Since(start).Round(100*time.Millisecond))
	if err := client.WaitReady(ctx, res.Workloads, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE Redis replaced and meeting-controller ready again %s after the deletion", time.Since(start).Round(100*time.Millisecond))
	if after := restarts(); after != before {
		t.Errorf("meeting-controller restarted %d time(s) during the Redis outage; it should recover in place", after-before)
	}
}
