package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/internal/simtest"
	"github.com/darktower/delivery/pipelines/sim"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var client *Client

func TestMain(m *testing.M) {
	simtest.Main(m, func(s *sim.State) {
		cfg, err := s.RESTConfig()
		if err == nil {
			client, err = New(cfg)
		}
		if err != nil {
			panic(err)
		}
	})
}

func objects(t *testing.T, yamls ...string) []*unstructured.Unstructured {
	t.Helper()
	var docs [][]byte
	for _, y := range yamls {
		docs = append(docs, []byte(y))
	}
	objs, err := ParseObjects(docs)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

const demoNS = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    pod-security.kubernetes.io/enforce: restricted
`

func demoDeployment(replicas int, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: %d
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: web
          image: %s
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
`, replicas, image)
}

func TestApplyWaitAndReplace(t *testing.T) {
	ctx := context.Background()
	objs := objects(t, demoDeployment(2, "example.com/web@sha256:"+strings.Repeat("a", 64)), demoNS)
	for _, dry := range []bool{true, false} {
		for _, r := range client.Apply(ctx, objs, dry) {
			if r.Err != nil && !(dry && strings.Contains(r.Err.Error(), `namespaces "demo" not found`)) {
				t.Fatalf("apply (dry run %v) %s: %v", dry, r.Object, r.Err)
			}
		}
	}
	w := Workload{Kind: "Deployment", Namespace: "demo", Name: "web"}
	start := time.Now()
	if err := client.WaitReady(ctx, []Workload{w}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE deployment of 2 replicas Ready in %s", time.Since(start).Round(time.Millisecond))
	sel, err := client.Selector(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := client.DeleteOnePod(ctx, "demo", sel, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, err := client.Typed.CoreV1().Pods("demo").List(ctx, listOpts(sel))
		if err != nil {
			t.Fatal(err)
		}
		ready, replaced := 0, true
		for _, p := range pods.Items {
			if p.Name == gone {
				replaced = false
			}
			if podReady(&p) {
				ready++
			}
		}
		if replaced && ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not replaced by a Ready one within 60 s (%d ready)", gone, ready)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestServerRefusesAreReportedPerObject(t *testing.T) {
	ctx := context.Background()
	privileged := strings.Replace(demoDeployment(1, "example.com/web@sha256:"+strings.Repeat("b", 64)), "name: web\n  namespace", "name: root-web\n  namespace", 1)
	privileged = strings.Replace(privileged, "runAsNonRoot: true\n        runAsUser: 65532", "runAsNonRoot: false\n        runAsUser: 0", 1)
	typo := strings.Replace(demoDeployment(1, "x@sha256:"+strings.Repeat("c", 64)), "replicas: 1", "replica: 1", 1)
	typo = strings.Replace(typo, "name: web\n  namespace", "name: typo-web\n  namespace", 1)
	results := client.Apply(ctx, objects(t, demoNS, typo, `apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: demo}
`), true)
	byObject := map[string]error{}
	for _, r := range results {
		byObject[r.Object] = r.Err
	}
	if err := byObject["Deployment demo/typo-web"]; err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("unknown field: %v", err)
	}
	if err := byObject["Widget demo/w"]; err == nil || !strings.Contains(err.Error(), "CRD") {
		t.Errorf("unknown kind: %v", err)
	}
	// Pod Security is enforced on pods (a Deployment is admitted with a
	// warning): the ReplicaSet's pods are refused, and not-ready reporting says so.
	for _, r := range client.Apply(ctx, objects(t, privileged), false) {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Object, r.Err)
		}
		if len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "would violate PodSecurity") {
			t.Errorf("%s admitted without the Pod Security warning: %v", r.Object, r.Warnings)
		}
	}
	err := client.WaitReady(ctx, []Workload{{Kind: "Deployment", Namespace: "demo", Name: "root-web"}}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "0/1 ready") || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a PSS-violating deployment: %v", err)
	}
}
