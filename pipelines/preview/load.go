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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LoadDeployment is the load the chaos stage runs its experiments under:
// the smoke client with SMOKE_MODE=load (its rights, plus Prometheus's
// scrape: the preview overlay's smoke.yaml), as Deployment darktower-load.
const LoadDeployment = "darktower-load"

// LoadInterval is how often the load makes its round of calls and relays
// a datagram each way.
const LoadInterval = 250 * time.Millisecond

// LoadLogLines is how much of the load's log the stop shows.
const LoadLogLines = 40

// StartLoad builds the smoke client, runs it as the load in namespace and
// waits for its pod to run; the returned stop deletes it.
func StartLoad(ctx context.Context, c *kindcluster.Cluster, client *cluster.Client, root, namespace string, progress io.Writer) (stop func(), err error) {
	return StartLoadWith(ctx, c, client, root, namespace, LoadOptions{}, progress)
}

// LoadOptions shape a load other than the chaos stage's.
type LoadOptions struct {
	Name      string        // the Deployment (default LoadDeployment)
	Component string        // its pods' app.kubernetes.io/component (default load)
	Replicas  int32         // default 1
	Interval  time.Duration // default LoadInterval
	Env       []corev1.EnvVar
	CPULimit  string // the container's CPU limit (default the smoke pod's, 500m)
}

// StartLoadWith is StartLoad with o's shape.
func StartLoadWith(ctx context.Context, c *kindcluster.Cluster, client *cluster.Client, root, namespace string, o LoadOptions, progress io.Writer) (stop func(), err error) {
	if o.Name == "" {
		o.Name = LoadDeployment
	}
	if o.Component == "" {
		o.Component = "load"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Interval == 0 {
		o.Interval = LoadInterval
	}
	image, err := c.LoadGoProgram(ctx, kindcluster.GoProgram{ModuleDir: filepath.Join(root, "services"),
		Package: "./cmd/darktower-smoke", Name: "darktower-smoke"})
	if err != nil {
		return nil, err
	}
	pod := smokePod(namespace, image)
	pod.Labels["app.kubernetes.io/component"] = o.Component
	spec := pod.Spec
	spec.RestartPolicy = corev1.RestartPolicyAlways
	spec.Containers[0].Name = "load"
	spec.Containers[0].Env = append(spec.Containers[0].Env,
		corev1.EnvVar{Name: "SMOKE_MODE", Value: "load"},
		corev1.EnvVar{Name: "SMOKE_LOAD_INTERVAL", Value: o.Interval.String()},
		corev1.EnvVar{Name: "SMOKE_UDP_TIMEOUT", Value: "1s"})
	spec.Containers[0].Env = append(spec.Containers[0].Env, o.Env...)
	spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "ops", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	if o.CPULimit != "" {
		q, err := resource.ParseQuantity(o.CPULimit)
		if err != nil {
			return nil, fmt.Errorf("load CPU limit %q: %w", o.CPULimit, err)
		}
		spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = q
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: namespace, Labels: pod.Labels},
		Spec: appsv1.DeploymentSpec{Replicas: &o.Replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
			"app.kubernetes.io/name": "darktower-smoke", "app.kubernetes.io/component": o.Component}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: spec}},
	}
	deployments := client.Typed.AppsV1().Deployments(namespace)
	if err := deployments.Delete(ctx, o.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if _, err := deployments.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the load: %w", err)
	}
	stop = func() {
		ctx := context.WithoutCancel(ctx)
		// What it logged (its failures, its media session's moves) says
		// why a budget was missed; the pod goes with the Deployment.
		pods, err := client.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=darktower-smoke,app.kubernetes.io/component=" + o.Component})
		if err == nil {
			tail := int64(LoadLogLines)
			for _, p := range pods.Items {
				logs, err := client.Typed.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
				if err != nil {
					continue
				}
				for _, line := range strings.Split(strings.TrimSpace(string(logs)), "\n") {
					upstream.Say(progress, "load: %s", line)
				}
			}
		}
		if err := deployments.Delete(ctx, o.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			upstream.Say(progress, "load: deleting %s: %v", o.Name, err)
		}
	}
	// It has no readiness probe: Ready is running.
	if err := kindcluster.WaitPodsReady(ctx, client.Typed, namespace, "app.kubernetes.io/name=darktower-smoke,app.kubernetes.io/component="+o.Component, 2*time.Minute); err != nil {
		stop()
		return nil, fmt.Errorf("the load did not start: %w", err)
	}
	upstream.Say(progress, "load: %s running in %s (%d pod(s), each a round of calls and a datagram each way every %s)", o.Name, namespace, o.Replicas, o.Interval)
	return stop, nil
}
