package preview

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/upstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LoadDeployment is the load the chaos stage runs its experiments under:
// the smoke client with SMOKE_MODE=load (its rights, plus Prometheus's
// scrape: the preview overlay's smoke.yaml), as Deployment darktower-load.
const LoadDeployment = "darktower-load"

// LoadInterval is how often the load makes its round of calls and relays
// a datagram each way.
const LoadInterval = 250 * time.Millisecond

// StartLoad builds the smoke client, runs it as the load in namespace and
// waits for its pod to run; the returned stop deletes it.
func StartLoad(ctx context.Context, c *kindcluster.Cluster, client *cluster.Client, root, namespace string, progress io.Writer) (stop func(), err error) {
	image, err := c.LoadGoProgram(ctx, kindcluster.GoProgram{ModuleDir: filepath.Join(root, "services"),
		Package: "./cmd/darktower-smoke", Name: "darktower-smoke"})
	if err != nil {
		return nil, err
	}
	pod := smokePod(namespace, image)
	pod.Labels["app.kubernetes.io/component"] = "load"
	spec := pod.Spec
	spec.RestartPolicy = corev1.RestartPolicyAlways
	spec.Containers[0].Name = "load"
	spec.Containers[0].Env = append(spec.Containers[0].Env,
		corev1.EnvVar{Name: "SMOKE_MODE", Value: "load"},
		corev1.EnvVar{Name: "SMOKE_LOAD_INTERVAL", Value: LoadInterval.String()},
		corev1.EnvVar{Name: "SMOKE_UDP_TIMEOUT", Value: "1s"})
	spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "ops", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: LoadDeployment, Namespace: namespace, Labels: pod.Labels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
			"app.kubernetes.io/name": "darktower-smoke", "app.kubernetes.io/component": "load"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: spec}},
	}
	deployments := client.Typed.AppsV1().Deployments(namespace)
	if err := deployments.Delete(ctx, LoadDeployment, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if _, err := deployments.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the load: %w", err)
	}
	stop = func() {
		if err := deployments.Delete(context.WithoutCancel(ctx), LoadDeployment, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			upstream.Say(progress, "load: deleting %s: %v", LoadDeployment, err)
		}
	}
	// It has no readiness probe: Ready is running.
	if err := kindcluster.WaitPodsReady(ctx, client.Typed, namespace, "app.kubernetes.io/name=darktower-smoke,app.kubernetes.io/component=load", 2*time.Minute); err != nil {
		stop()
		return nil, fmt.Errorf("the load did not start: %w", err)
	}
	upstream.Say(progress, "load: %s running in %s (a round of calls and a datagram each way every %s)", LoadDeployment, namespace, LoadInterval)
	return stop, nil
}
