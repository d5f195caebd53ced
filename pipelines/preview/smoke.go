package preview

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/upstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// SmokePod is the pod the smoke check runs as; its label is the one the
// preview overlay's smoke.yaml policies admit.
const SmokePod = "darktower-smoke"

// SmokeTimeout bounds the whole check (the program itself gives up after
// two minutes).
const SmokeTimeout = 3 * time.Minute

// Smoke runs the services' smoke check (services/cmd/darktower-smoke) as a
// pod in namespace and returns its report. A failed check is an error
// that carries the report.
func Smoke(ctx context.Context, c *kindcluster.Cluster, client *cluster.Client, root, namespace string, progress io.Writer) (string, error) {
	start := time.Now()
	image, err := c.LoadGoProgram(ctx, kindcluster.GoProgram{ModuleDir: filepath.Join(root, "services"),
		Package: "./cmd/darktower-smoke", Name: "darktower-smoke"})
	if err != nil {
		return "", err
	}
	pods := client.Typed.CoreV1().Pods(namespace)
	zero := int64(0)
	if err := pods.Delete(ctx, SmokePod, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, SmokePod, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		return "", fmt.Errorf("the previous smoke pod is still there: %w", err)
	}
	if _, err := pods.Create(ctx, smokePod(namespace, image), metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("creating the smoke pod: %w", err)
	}
	var phase corev1.PodPhase
	err = wait.PollUntilContextTimeout(ctx, time.Second, SmokeTimeout, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, SmokePod, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	logs, lerr := pods.GetLogs(SmokePod, &corev1.PodLogOptions{}).DoRaw(ctx)
	report := strings.TrimSpace(string(logs))
	if lerr != nil {
		report = "(no logs: " + lerr.Error() + ")"
	}
	for _, line := range strings.Split(report, "\n") {
		upstream.Say(progress, "smoke: %s", line)
	}
	if err != nil {
		return report, fmt.Errorf("the smoke check did not finish within %s (pod phase %q)", SmokeTimeout, phase)
	}
	if phase != corev1.PodSucceeded {
		return report, fmt.Errorf("the smoke check failed:\n%s", report)
	}
	upstream.Say(progress, "smoke: passed (%s)", time.Since(start).Round(100*time.Millisecond))
	return report, nil
}

func smokePod(namespace, image string) *corev1.Pod {
	yes, no := true, false
	uid := int64(65532)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: SmokePod, Namespace: namespace, Labels: map[string]string{
			"app.kubernetes.io/name": "darktower-smoke", "app.kubernetes.io/part-of": "dark-tower",
			"app.kubernetes.io/managed-by": "darktower-preview"}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: new(int64),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "smoke", Image: image, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "SMOKE_AC_URL", Value: "https://ac-service"},
					{Name: "SMOKE_GC_URL", Value: "https://global-controller"},
					{Name: "SMOKE_MC_URL", Value: "https://meeting-controller"},
					{Name: "SMOKE_CA_FILE", Value: "/etc/darktower/smoke/ca.crt"},
					{Name: "SMOKE_CLIENT_ID", Value: "darktower-smoke"},
					{Name: "SMOKE_CLIENT_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "darktower-smoke"}, Key: "client-secret"}}},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				VolumeMounts: []corev1.VolumeMount{{Name: "ca", MountPath: "/etc/darktower/smoke", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: "darktower-smoke", Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}}}},
		},
	}
}
