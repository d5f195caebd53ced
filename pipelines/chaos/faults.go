package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/kindcluster"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeExec runs a command inside a cluster node (for kind: inside the
// node's container, where ctr, nsenter and iptables are) and returns
// its standard output. container-kill and pod-network-loss need it: they
// act through the node's container runtime, as Litmus's helper pod does.
type NodeExec func(ctx context.Context, node string, command ...string) (string, error)

// KindNodeExec is NodeExec for the nodes of a kind cluster.
func KindNodeExec(c *kindcluster.Cluster) NodeExec {
	return func(ctx context.Context, node string, command ...string) (string, error) {
		nodes, err := c.Nodes()
		if err != nil {
			return "", err
		}
		for _, n := range nodes {
			if n.String() != node {
				continue
			}
			var out, errb bytes.Buffer
			err := n.CommandContext(ctx, command[0], command[1:]...).SetStdout(&out).SetStderr(&errb).Run()
			if err != nil {
				return out.String(), fmt.Errorf("node %s: %s: %w: %s", node, strings.Join(command, " "), err, strings.TrimSpace(errb.String()))
			}
			return out.String(), nil
		}
		return "", fmt.Errorf("node %s is not a node of kind cluster %s", node, c.Name)
	}
}

// targets are the target's pods that are running and not being deleted,
// checked to belong to the engine's appkind (chaos-operator refuses an
// engine whose applabel matches nothing of that kind).
func targets(ctx context.Context, cs kubernetes.Interface, t Target) ([]corev1.Pod, error) {
	pods, err := cs.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: t.Label})
	if err != nil {
		return nil, fmt.Errorf("listing the target's pods (%s in %s): %w", t.Label, t.Namespace, err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		if err := ownedBy(p, t.Kind); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running pod matches %s in %s (%d pod(s) listed): nothing to inject into", t.Label, t.Namespace, len(pods.Items))
	}
	return out, nil
}

func ownedBy(p corev1.Pod, kind string) error {
	want := map[string]string{"deployment": "ReplicaSet", "statefulset": "StatefulSet", "daemonset": "DaemonSet"}[strings.ToLower(kind)]
	if want == "" {
		return nil // a kind this executor does not check
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == want {
			return nil
		}
	}
	return fmt.Errorf("pod %s/%s matches the target's label but is not owned by a %s (appkind %s): fix appinfo in the engine", p.Namespace, p.Name, want, kind)
}

// choose picks PODS_AFFECTED_PERC % of pods at random, at least one
// (litmus-go pkg/utils/common filterPodsByPercentage: max(1, perc×n/100)).
func choose(pods []corev1.Pod, perc int) []corev1.Pod {
	n := max(1, perc*len(pods)/100)
	shuffled := append([]corev1.Pod(nil), pods...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	return shuffled[:n]
}

// rounds runs round every interval until duration has passed, as
// litmus-go's pod-delete and container-kill loops do: a round, then the
// interval, while less than the duration has elapsed. ctx ends it early
// (a probe's stopOnFailure, or cancellation).
func rounds(ctx context.Context, duration, interval time.Duration, round func(context.Context) error) error {
	if interval <= 0 {
		interval = duration
	}
	start := time.Now()
	for time.Since(start) < duration {
		if err := round(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
	return nil
}

// podDelete deletes the chosen pods each round, with grace period 0 when
// FORCE (litmus-go chaoslib/litmus/pod-delete).
func (x *execution) podDelete(ctx context.Context) error {
	force, err := x.exp.Force()
	if err != nil {
		return fmt.Errorf("%s: FORCE=%q: %w", x.exp.Engine, x.exp.Env["FORCE"], err)
	}
	var grace *int64
	if force {
		grace = new(int64)
	}
	return rounds(ctx, x.duration, x.interval, func(ctx context.Context) error {
		pods, err := targets(ctx, x.cs, x.exp.Target)
		if err != nil {
			return err
		}
		for _, p := range choose(pods, x.perc) {
			if err := x.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace}); err != nil {
				return fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err)
			}
			x.injected(fmt.Sprintf("deleted %s (force %v)", p.Name, force))
		}
		return nil
	})
}

// containerOf is the id (without the runtime's prefix) of the running
// container named name in p; empty name: the pod's first container.
func containerOf(p corev1.Pod, name string) (string, error) {
	if name == "" {
		name = p.Spec.Containers[0].Name
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name != name {
			continue
		}
		if s.State.Running == nil || s.ContainerID == "" {
			return "", fmt.Errorf("container %s of pod %s/%s is not running", name, p.Namespace, p.Name)
		}
		_, id, _ := strings.Cut(s.ContainerID, "://")
		return id, nil
	}
	return "", fmt.Errorf("pod %s/%s has no container %s (TARGET_CONTAINER)", p.Namespace, p.Name, name)
}

// containerKill kills the target container of the chosen pods each round
// with SIGKILL through containerd on their node (litmus-go's
// container-kill helper with containerd: `crictl stop --timeout=0`, i.e.
// SIGKILL at once); the kubelet restarts it in place. ctr, containerd's
// own client, because the node image built here has no crictl (kindest/
// node has both).
func (x *execution) containerKill(ctx context.Context) error {
	if x.nodeExec == nil {
		return fmt.Errorf("%s: container-kill acts through the node's container runtime: the executor has no node access (a kind cluster is needed: --cluster NAME)", x.exp.Engine)
	}
	name := x.exp.Env["TARGET_CONTAINER"]
	return rounds(ctx, x.duration, x.interval, func(ctx context.Context) error {
		pods, err := targets(ctx, x.cs, x.exp.Target)
		if err != nil {
			return err
		}
		for _, p := range choose(pods, x.perc) {
			id, err := containerOf(p, name)
			if err != nil {
				return err
			}
			if _, err := x.nodeExec(ctx, p.Spec.NodeName, "ctr", "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
				return fmt.Errorf("killing container %s of %s: %w", id[:min(12, len(id))], p.Name, err)
			}
			x.injected(fmt.Sprintf("killed %s/%s", p.Name, name))
		}
		return nil
	})
}

// lossRules are the iptables rules (without -I/-D) that drop percent % of
// the traffic of iface in a pod's network namespace, both ways. Below
// 100 % the statistic match drops each packet with that probability (the
// kernel here has no netem, which Litmus's tc-based helper uses).
func lossRules(iface string, percent int) [][]string {
	var match []string
	if percent < 100 {
		match = []string{"-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(float64(percent)/100, 'f', 4, 64)}
	}
	in := append(append([]string{"INPUT", "-i", iface}, match...), "-j", "DROP")
	out := append(append([]string{"OUTPUT", "-o", iface}, match...), "-j", "DROP")
	return [][]string{in, out}
}

// networkLoss drops NETWORK_PACKET_LOSS_PERCENTAGE % of the chosen pods'
// traffic on NETWORK_INTERFACE (eth0) for the whole duration, with
// iptables in each pod's network namespace (nsenter --net, the path
// containerd records for the target container; litmus-go's helper enters
// the same namespace through the container's pid). The rules
// are always removed, whatever ends the chaos.
func (x *execution) networkLoss(ctx context.Context) (err error) {
	if x.nodeExec == nil {
		return fmt.Errorf("%s: pod-network-loss acts inside the node: the executor has no node access (a kind cluster is needed: --cluster NAME)", x.exp.Engine)
	}
	percent, perr := strconv.Atoi(x.exp.Env["NETWORK_PACKET_LOSS_PERCENTAGE"])
	if perr != nil || percent < 0 || percent > 100 {
		return fmt.Errorf("%s: NETWORK_PACKET_LOSS_PERCENTAGE=%q is not a percentage", x.exp.Engine, x.exp.Env["NETWORK_PACKET_LOSS_PERCENTAGE"])
	}
	iface := x.exp.Env["NETWORK_INTERFACE"]
	if iface == "" {
		iface = "eth0"
	}
	pods, err := targets(ctx, x.cs, x.exp.Target)
	if err != nil {
		return err
	}
	type applied struct{ pod, node, netns string }
	var done []applied
	defer func() {
		// Not ctx: the rules go even when the run was cancelled.
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, a := range done {
			for _, r := range lossRules(iface, percent) {
				if _, derr := x.nodeExec(cctx, a.node, append([]string{"nsenter", "--net=" + a.netns, "iptables", "-w", "-D"}, r...)...); derr != nil {
					// A pod deleted meanwhile took its namespace (and the
					// rules) with it; anything else is left behind.
					if _, gerr := x.cs.CoreV1().Pods(x.exp.Target.Namespace).Get(cctx, a.pod, metav1.GetOptions{}); gerr == nil && err == nil {
						err = fmt.Errorf("removing the loss rules from %s: %w", a.pod, derr)
					}
				}
			}
			x.injected(fmt.Sprintf("restored %s", a.pod))
		}
	}()
	for _, p := range choose(pods, x.perc) {
		id, err := containerOf(p, x.exp.Env["TARGET_CONTAINER"])
		if err != nil {
			return err
		}
		netns, err := x.netns(ctx, p, id)
		if err != nil {
			return err
		}
		for i, r := range lossRules(iface, percent) {
			if _, err := x.nodeExec(ctx, p.Spec.NodeName, append([]string{"nsenter", "--net=" + netns, "iptables", "-w", "-I"}, r...)...); err != nil {
				if i > 0 { // the first rule is in: remove it too
					done = append(done, applied{p.Name, p.Spec.NodeName, netns})
				}
				return err
			}
		}
		done = append(done, applied{p.Name, p.Spec.NodeName, netns})
		x.injected(fmt.Sprintf("%d%% loss on %s of %s", percent, iface, p.Name))
	}
	select {
	case <-ctx.Done():
	case <-time.After(x.duration):
	}
	return nil
}

// netns is the path of the network namespace of the target container,
// from containerd's record of it (its OCI spec): the pod sandbox's, as
// /proc/<pause pid>/ns/net. Not the container's own pid: the loss makes
// the liveness probe fail, the kubelet restarts the container, and the
// rules must still be found (and removed) through a live process.
func (x *execution) netns(ctx context.Context, p corev1.Pod, id string) (string, error) {
	raw, err := x.nodeExec(ctx, p.Spec.NodeName, "ctr", "-n", "k8s.io", "containers", "info", id)
	if err != nil {
		return "", err
	}
	var info struct {
		Spec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string } `json:"namespaces"`
			} `json:"linux"`
		} `json:"Spec"`
	}
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		return "", fmt.Errorf("ctr containers info %s (pod %s): %w", id[:min(12, len(id))], p.Name, err)
	}
	for _, n := range info.Spec.Linux.Namespaces {
		if n.Type == "network" && n.Path != "" {
			return n.Path, nil
		}
	}
	return "", fmt.Errorf("ctr containers info %s (pod %s): no network namespace path in its spec", id[:min(12, len(id))], p.Name)
}
