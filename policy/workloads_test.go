package policy

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Overlays are the deployable renderings: every environment, both
// simulated regions of the local one.
var overlays = []string{"overlays/local/region-us-west", "overlays/local/region-us-east", "overlays/preview", "overlays/staging", "overlays/prod"}

func decoded(t *testing.T, overlay string) *Rendered {
	t.Helper()
	objs := render(t, filepath.Join(infraDir, overlay))
	typed, structural, err := DecodeAll(objs)
	if err != nil {
		t.Fatal(err)
	}
	return &Rendered{Objects: objs, Typed: typed, Structural: structural}
}

func TestOverlaysFollowTheADR(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := decoded(t, overlay)
			ws := r.Workloads()
			if len(ws) != len(Services) {
				t.Fatalf("%d workloads rendered, want %d", len(ws), len(Services))
			}
			sizing := ResourceSizing
			if overlay == "overlays/preview" {
				sizing = PreviewSizing
			}
			var all []string
			for _, w := range ws {
				all = append(all, CheckWorkloadSized(w, true, sizing)...)
			}
			all = append(all, CheckScaling(r)...)
			all = append(all, CheckNamespaces(r)...)
			for _, p := range all {
				t.Error(p)
			}
		})
	}
}

func TestStagingAndProdAreTheSameButForImagesAndLabels(t *testing.T) {
	// Promotion changes only digests, so staging proves prod's shape.
	staging, prod := decoded(t, "overlays/staging"), decoded(t, "overlays/prod")
	if len(staging.Objects) != len(prod.Objects) {
		t.Fatalf("staging renders %d objects, prod %d", len(staging.Objects), len(prod.Objects))
	}
	withoutImages := func(y []byte) string {
		var keep []string
		for _, line := range strings.Split(string(y), "\n") {
			if !strings.Contains(line, "image: ") {
				keep = append(keep, line)
			}
		}
		return strings.Join(keep, "\n")
	}
	for i := range staging.Objects {
		a := strings.ReplaceAll(withoutImages(staging.Objects[i].YAML), "dark-tower-staging", "dark-tower-prod")
		if a != withoutImages(prod.Objects[i].YAML) {
			t.Errorf("%s differs between staging and prod beyond images", staging.Objects[i].ID())
		}
	}
}

// The checks must fail on drift: each mutation below breaks one ADR rule.
func TestWorkloadChecksCatchDrift(t *testing.T) {
	base := decoded(t, "overlays/prod").Workloads()
	var mh Workload
	for _, w := range base {
		if w.Name == "media-handler" {
			mh = w
		}
	}
	for name, c := range map[string]struct {
		mutate func(*Workload)
		want   string
	}{
		"liveness period": {func(w *Workload) { w.Template.Spec.Containers[0].LivenessProbe.PeriodSeconds = 15 }, "livenessProbe timings"},
		"readiness path":  {func(w *Workload) { w.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path = "/health" }, "readinessProbe probes"},
		"cpu limit": {func(w *Workload) {
			w.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("7")
		}, "cpu limit = 7"},
		"memory request": {func(w *Workload) {
			w.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory] = resource.MustParse("12G")
		}, "memory request"},
		"tag, not digest": {func(w *Workload) { w.Template.Spec.Containers[0].Image = "ghcr.io/darktower/media-handler:1.0.0" }, "not pinned by digest"},
		"latest":          {func(w *Workload) { w.Template.Spec.Containers[0].Image = "ghcr.io/darktower/media-handler:latest" }, "uses :latest"},
		"root":            {func(w *Workload) { u := int64(0); w.Template.Spec.SecurityContext.RunAsUser = &u }, "65532:65532"},
		"writable root": {func(w *Workload) {
			f := false
			w.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
		}, "read-only root"},
		"capability": {func(w *Workload) {
			w.Template.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "adds capability NET_ADMIN"},
		"unsafe sysctl": {func(w *Workload) {
			w.Template.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.core.somaxconn", Value: "1"}}
		}, "safe set"},
		"no node pool":     {func(w *Workload) { w.Template.Spec.NodeSelector = nil }, "dedicated node pool"},
		"grace":            {func(w *Workload) { g := int64(10); w.Template.Spec.TerminationGracePeriodSeconds = &g }, "terminationGracePeriodSeconds"},
		"label":            {func(w *Workload) { w.Template.Labels = map[string]string{"app.kubernetes.io/name": "media-handler"} }, "pod template label app.kubernetes.io/part-of missing"},
		"host network":     {func(w *Workload) { w.Template.Spec.HostNetwork = true }, "host namespaces"},
		"statefulset kind": {func(w *Workload) { w.Kind = "StatefulSet" }, "the ADR says Deployment"},
	} {
		w := mh
		w.Template = *mh.Template.DeepCopy()
		c.mutate(&w)
		found := false
		for _, p := range CheckWorkload(w, true) {
			found = found || strings.Contains(p, c.want)
		}
		if !found {
			t.Errorf("%s: no problem containing %q in %v", name, c.want, CheckWorkload(w, true))
		}
	}
	if p := CheckWorkload(mh, true); len(p) != 0 {
		t.Fatalf("the unmutated workload has problems: %v", p)
	}
}
