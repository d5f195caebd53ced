// Package kindtest holds what the real-cluster tests share: the netprobe
// image (built from tools/netprobe and loaded straight into the nodes),
// running a command in a pod, and waiting for pods.
package kindtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/upstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// ProbeImage is the netprobe image's name inside the cluster.
const ProbeImage = "darktower.local/netprobe:test"

// LoadProbe builds tools/netprobe for the host platform, assembles it
// onto the skeleton base and loads it into every node of c as ProbeImage.
func LoadProbe(ctx context.Context, c *kindcluster.Cluster, repoRoot string) error {
	ref, err := c.LoadGoProgram(ctx, kindcluster.GoProgram{ModuleDir: repoRoot, Package: "./tools/netprobe", Name: "netprobe"})
	if err != nil {
		return err
	}
	return c.Tag(ref, ProbeImage)
}

// ProbePod is a pod running `netprobe serve` on the services' ports.
func ProbePod(namespace, name string, labels map[string]string) *corev1.Pod {
	no := false
	yes := true
	uid := int64(65532)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				Sysctls:        []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}},
			Containers: []corev1.Container{{
				Name: "probe", Image: ProbeImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"serve", "--tcp", "443,8080,8443,5432,6379", "--udp", "443"},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

// Exec runs command in a pod's first container and returns its output;
// a non-zero exit is an error carrying the output.
func Exec(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, namespace, pod string, command ...string) (string, error) {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", err
	}
	// Separate buffers: the executor copies stdout and stderr concurrently.
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return stdout.String(), fmt.Errorf("%s in %s/%s: %w: %s", strings.Join(command, " "), namespace, pod, err, strings.TrimSpace(stderr.String()+stdout.String()))
	}
	return stdout.String(), nil
}

// ClusterTurn waits for this machine's real-cluster tests to be idle and
// returns the release: the test packages that make clusters (kindcluster,
// preview, chaos) take turns, since on two cores one cluster's start-up
// starves another's probes and the timings they judge mean nothing.
func ClusterTurn() (func(), error) {
	return upstream.Lock(upstream.DefaultCacheDir(), "real-cluster-tests", os.Stderr)
}

// RepoRoot is the repository's root: the nearest directory above the
// test's own holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// ThrowawayPreview picks a pull-request number no one's preview has (base
// plus a per-run part: each test package has its own base) and a state
// directory, and deletes that preview when the test ends, unless
// DARKTOWER_KEEP_TEST_CLUSTER is set. DARKTOWER_TEST_PR and
// DARKTOWER_TEST_STATE pin both, to work on with a kept cluster.
func ThrowawayPreview(t testing.TB, base int) (pr int, state string) {
	t.Helper()
	pr = base + int(time.Now().UnixNano()%100000)
	if v, err := strconv.Atoi(os.Getenv("DARKTOWER_TEST_PR")); err == nil && v > 0 {
		pr = v
	}
	if state = os.Getenv("DARKTOWER_TEST_STATE"); state == "" {
		state = t.TempDir()
	}
	t.Cleanup(func() {
		if os.Getenv("DARKTOWER_KEEP_TEST_CLUSTER") != "" {
			t.Logf("preview %s kept (DARKTOWER_TEST_PR=%d DARKTOWER_TEST_STATE=%s)", preview.Name(pr), pr, state)
			return
		}
		preview.Down(context.Background(), pr, state, nil)
	})
	return pr, state
}

// Progress is a test's progress output: kept, and logged if the test
// fails; also copied to stderr as it comes with DARKTOWER_TEST_VERBOSE
// set. It is safe for concurrent writers.
func Progress(t testing.TB) io.Writer {
	t.Helper()
	p := &progress{}
	if os.Getenv("DARKTOWER_TEST_VERBOSE") != "" {
		p.tee = os.Stderr
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Log(p.buf.String())
		}
	})
	return p
}

type progress struct {
	mu  sync.Mutex
	buf bytes.Buffer
	tee io.Writer
}

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tee != nil {
		p.tee.Write(b)
	}
	return p.buf.Write(b)
}
