package kindcluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// SystemPods are the cluster's own workloads every deployment relies on:
// DNS, the pod network and NetworkPolicy (kube-router), the service proxy
// and the default StorageClass.
var SystemPods = [][2]string{{"kube-system", "k8s-app=kube-dns"}, {"kube-system", "k8s-app=kube-router"},
	{"kube-system", "k8s-app=kube-proxy"}, {"local-path-storage", "app=local-path-provisioner"}}

// WaitSystemReady waits until every SystemPods workload is Ready.
func WaitSystemReady(ctx context.Context, cs kubernetes.Interface, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, sel := range SystemPods {
		if err := WaitPodsReady(ctx, cs, sel[0], sel[1], time.Until(deadline)); err != nil {
			return err
		}
	}
	return nil
}

// WaitPodsReady waits until every pod matching selector in namespace is
// Ready (and there is at least one).
func WaitPodsReady(ctx context.Context, cs kubernetes.Interface, namespace, selector string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(pods.Items) > 0 {
			var waiting []string
			for _, p := range pods.Items {
				if !Ready(&p) {
					waiting = append(waiting, fmt.Sprintf("%s (%s)", p.Name, why(&p)))
				}
			}
			if len(waiting) == 0 {
				return nil
			}
			last = strings.Join(waiting, ", ")
		} else if err != nil {
			last = err.Error()
		} else {
			last = "no pods yet"
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("pods %q in %s not Ready within %s: %s", selector, namespace, within, last)
}

// Ready reports a pod's Ready condition.
func Ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func why(p *corev1.Pod) string {
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil {
			return w.Reason + ": " + w.Message
		}
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("%s exited %d", s.Name, t.ExitCode)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return c.Message
		}
	}
	return string(p.Status.Phase)
}
