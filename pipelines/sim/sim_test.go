package sim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Up starts every component, a second Up reuses the running cluster, and
// Down stops exactly those processes and removes the state.
func TestUpReuseAndDown(t *testing.T) {
	ctx := context.Background()
	tools, err := EnsureTools(ctx, DefaultCacheDir(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cluster")
	var progress bytes.Buffer
	start := time.Now()
	s, err := Up(ctx, dir, tools, &progress)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Down(dir, nil) })
	t.Logf("FIGURE sim up (tools built) in %s", time.Since(start).Round(100*time.Millisecond))
	if len(s.Processes) != 5 {
		t.Fatalf("%d processes: %+v", len(s.Processes), s.Processes)
	}
	cs, err := s.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: PoolLabel + "=media"})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("media nodes: %v %d", err, len(nodes.Items))
	}
	tainted := false
	for _, taint := range nodes.Items[0].Spec.Taints {
		tainted = tainted || (taint.Key == PoolLabel && taint.Value == "media" && taint.Effect == "NoSchedule")
	}
	if !tainted {
		t.Fatalf("the media node lacks the media taint: %+v", nodes.Items[0].Spec.Taints)
	}
	progress.Reset()
	again, err := Up(ctx, dir, tools, &progress)
	if err != nil || again.Server != s.Server || !strings.Contains(progress.String(), "already up") {
		t.Fatalf("second up: %v, %s vs %s, %q", err, again.Server, s.Server, progress.String())
	}
	if err := Down(dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Processes {
		if p.alive() {
			t.Errorf("%s (pid %d) still runs after down", p.Name, p.PID)
		}
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "sim up") {
		t.Errorf("state after down: %v", err)
	}
}
