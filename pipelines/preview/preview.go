// Package preview is the preview environment of a pull request: its own
// one-node kind cluster (pr-<N>), the build of that commit deployed with
// the preview overlay and judged by the services' smoke check, labelled with the pull request, commit and expiry
// (a ConfigMap in kube-system, read back by list and reap), and torn down
// on close or when it expires.
package preview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/upstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// Overlay is what a preview deploys.
const Overlay = "overlays/preview"

// labels is the ConfigMap (kube-system/darktower-preview) a preview
// carries its identity in.
const labels = "darktower-preview"

// DefaultTTL is how long a preview lives unless renewed (reap removes it).
const DefaultTTL = 72 * time.Hour

// Options say which preview to make and from what.
type Options struct {
	PR        int
	Commit    string // the commit the build in Dist is of
	Root      string // repository root
	Dist      string // its build-all output
	TTL       time.Duration
	NodeImage string // kindcluster's choice (auto by default)
	StateDir  string
	CacheDir  string
	Mirror    string
	Progress  io.Writer
}

// Info is one preview, as list shows it.
type Info struct {
	PR       int
	Cluster  string
	Commit   string
	Created  time.Time
	Expires  time.Time
	State    string // "ready", or what is wrong
	Endpoint string // how to reach it
	Smoke    string // the smoke check's report (Up only)
}

// Name is the cluster of pull request pr.
func Name(pr int) string { return "pr-" + strconv.Itoa(pr) }

// Up creates (or updates) the preview of o.PR and deploys o.Dist into it.
func Up(ctx context.Context, o Options) (*Info, *deploy.Result, error) {
	if o.PR <= 0 {
		return nil, nil, errors.New("--pr: a pull request number is required (e.g. --pr 42)")
	}
	if o.Commit == "" {
		return nil, nil, errors.New("--commit: the commit being previewed is required")
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	c, err := kindcluster.Up(ctx, kindcluster.Options{Name: Name(o.PR), Nodes: 1, NoHostPorts: true,
		NodeImage: o.NodeImage, StateDir: o.StateDir, CacheDir: o.CacheDir, Mirror: o.Mirror, Progress: o.Progress,
		ConfigPath: o.Root + "/infra/local/kind-config.yaml"})
	if err != nil {
		return nil, nil, err
	}
	client, _, err := c.Client()
	if err != nil {
		return nil, nil, err
	}
	if err := kindcluster.WaitSystemReady(ctx, client.Typed, 3*time.Minute); err != nil {
		return nil, nil, err
	}
	// Labelled before the deploy, so a preview whose deploy fails is still
	// listed and reaped.
	now := time.Now().UTC()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: labels, Namespace: "kube-system",
		Labels: map[string]string{"app.kubernetes.io/managed-by": "darktower-preview"}},
		Data: map[string]string{"pr": strconv.Itoa(o.PR), "commit": o.Commit,
			"created": now.Format(time.RFC3339), "expires": now.Add(o.TTL).Format(time.RFC3339), "namespace": "preview"}}
	cms := client.Typed.CoreV1().ConfigMaps("kube-system")
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, err := cms.Get(ctx, labels, metav1.GetOptions{})
		if err != nil {
			return nil, nil, err
		}
		cm.Data["created"] = old.Data["created"] // an update keeps the preview's age
		cm.ResourceVersion = old.ResourceVersion
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return nil, nil, err
		}
	} else if err != nil {
		return nil, nil, err
	}
	res, err := deploy.Up(ctx, deploy.Options{Cluster: c, Client: client, Root: o.Root, Dist: o.Dist,
		Overlay: Overlay, CacheDir: o.CacheDir, Mirror: o.Mirror, Progress: o.Progress})
	if err != nil {
		return nil, res, err
	}
	if res.Namespace != cm.Data["namespace"] {
		return nil, res, fmt.Errorf("the preview overlay deploys into %q; preview expects %q", res.Namespace, cm.Data["namespace"])
	}
	report, err := Smoke(ctx, c, client, o.Root, res.Namespace, o.Progress)
	if err != nil {
		return nil, res, err
	}
	info, err := describe(ctx, Name(o.PR), o.StateDir)
	if info != nil {
		info.Smoke = report
	}
	return info, res, err
}

// Down deletes the preview of pr.
func Down(ctx context.Context, pr int, stateDir string, progress io.Writer) error {
	if pr <= 0 {
		return errors.New("--pr: a pull request number is required")
	}
	return kindcluster.Down(ctx, Name(pr), stateDir, progress)
}

// List describes every preview on this Docker engine.
func List(ctx context.Context, stateDir string) ([]Info, error) {
	names, err := kindcluster.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, n := range names {
		if !strings.HasPrefix(n, "pr-") {
			continue
		}
		info, err := describe(ctx, n, stateDir)
		if err != nil {
			pr, _ := strconv.Atoi(strings.TrimPrefix(n, "pr-"))
			info = &Info{PR: pr, Cluster: n, State: "unreadable: " + err.Error()}
		}
		out = append(out, *info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PR < out[j].PR })
	return out, nil
}

// Reap deletes the previews older than ttl (by creation) or past their own
// expiry, and returns what it removed. A pr-* cluster whose labels cannot
// be read is reported, never deleted: reap must not remove what it cannot
// judge (e.g. a cluster whose API this process cannot reach).
//
// only, when not empty, limits reaping to those pull requests (tests use it
// so that they never touch other previews on the same engine).
func Reap(ctx context.Context, ttl time.Duration, now time.Time, stateDir string, progress io.Writer, only ...int) ([]Info, error) {
	list, err := List(ctx, stateDir)
	if err != nil {
		return nil, err
	}
	var reaped []Info
	var errs []error
	for _, p := range list {
		if len(only) > 0 && !slices.Contains(only, p.PR) {
			continue
		}
		if p.Created.IsZero() {
			upstream.Say(progress, "preview: %s left alone: %s", p.Cluster, p.State)
			continue
		}
		expired := now.Sub(p.Created) > ttl || (!p.Expires.IsZero() && now.After(p.Expires))
		if !expired {
			continue
		}
		upstream.Say(progress, "preview: reaping %s (PR %d, created %s)", p.Cluster, p.PR, p.Created.Format(time.RFC3339))
		if err := kindcluster.Down(ctx, p.Cluster, stateDir, progress); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, p)
	}
	return reaped, errors.Join(errs...)
}

// describe reads a preview's ConfigMap and its services' readiness.
func describe(ctx context.Context, name, stateDir string) (*Info, error) {
	path := kindcluster.KubeconfigPath(stateDir, name)
	if _, err := os.Stat(path); err != nil {
		// A preview made by another run: take its kubeconfig from kind.
		if err := kindcluster.ExportKubeconfig(name, path); err != nil {
			return nil, err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	client, err := cluster.New(cfg)
	if err != nil {
		return nil, err
	}
	cm, err := client.Typed.CoreV1().ConfigMaps("kube-system").Get(ctx, labels, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("no preview labels in cluster %s: %w", name, err)
	}
	info := &Info{Cluster: name, Commit: cm.Data["commit"]}
	info.PR, _ = strconv.Atoi(cm.Data["pr"])
	info.Created, _ = time.Parse(time.RFC3339, cm.Data["created"])
	info.Expires, _ = time.Parse(time.RFC3339, cm.Data["expires"])
	ns := cm.Data["namespace"]
	notReady, err := client.NotReadyPods(ctx, ns, "app.kubernetes.io/part-of=dark-tower")
	switch {
	case err != nil:
		info.State = "unknown: " + err.Error()
	case len(notReady) > 0:
		info.State = "not ready: " + strings.Join(notReady, ", ")
	default:
		info.State = "ready"
	}
	info.Endpoint = fmt.Sprintf("export KUBECONFIG=%s; kubectl -n %s port-forward svc/global-controller 8443:443", path, ns)
	return info, nil
}
