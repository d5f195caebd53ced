package policy

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func podSpecs(r *Rendered) []corev1.PodSpec {
	var specs []corev1.PodSpec
	for _, w := range r.Workloads() {
		specs = append(specs, w.Template.Spec)
	}
	for _, d := range All[*appsv1.DaemonSet](r) {
		specs = append(specs, d.Spec.Template.Spec)
	}
	return specs
}

func TestEverySecretAPodNeedsIsSynced(t *testing.T) {
	for _, dir := range append(append([]string{}, overlays...), "platform/database") {
		t.Run(dir, func(t *testing.T) {
			r := decoded(t, dir)
			refs := SecretRefs(podSpecs(r))
			if len(refs) == 0 {
				t.Fatal("no secret references found: the check would prove nothing")
			}
			missing, err := CheckSecretsProvided(r, refs)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range missing {
				t.Errorf("secret %s is referenced but no ExternalSecret provides it", m)
			}
		})
	}
}
