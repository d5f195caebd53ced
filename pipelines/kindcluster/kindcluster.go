// Package kindcluster is the real cluster's lifecycle: kind clusters made
// with sigs.k8s.io/kind's own provider API (pkg/cluster, the Docker
// provider), from the ADR's kind config in infra/local, on the pinned
// upstream kindest/node where it can be had and on the node image this
// pipeline builds (pipelines/nodeimage) otherwise — both through the same
// code. Images of a build are loaded from dist/ straight into the nodes.
package kindcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/darktower/delivery/pipelines/upstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	kindconfig "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	kind "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindlog "sigs.k8s.io/kind/pkg/log"
	"sigs.k8s.io/yaml"
)

// UpstreamNodeImage is kind's own pinned node image for the kind version
// in go.mod; used where it can be pulled.
const UpstreamNodeImage = "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5"

// Node-image choices for Options.NodeImage.
const (
	NodeImageAuto     = "auto"     // upstream if present or pullable, else built here
	NodeImageBuilt    = "built"    // pipelines/nodeimage
	NodeImageUpstream = "upstream" // UpstreamNodeImage
)

// Options say which cluster to create and how.
type Options struct {
	Name        string // cluster name (default: the config's, "dark-tower")
	ConfigPath  string // kind config (default infra/local/kind-config.yaml)
	Nodes       int    // 0: as the config says; 1: one node standing in for every pool
	NoHostPorts bool   // drop the config's fixed host port mappings (several clusters on one host: previews, tests)
	NodeImage   string // auto, built, upstream or an image reference
	Mirror      string // Debian mirror for a built node image
	CacheDir    string // upstream builds (default upstream.DefaultCacheDir())
	StateDir    string // kubeconfigs (default ~/.cache/darktower/clusters)
	Wait        time.Duration
	Progress    io.Writer // step lines with durations
}

// Cluster is a created (or found) cluster.
type Cluster struct {
	Name       string
	Kubeconfig string
	NodeImage  string
	Steps      []nodeimage.Step
}

// DefaultStateDir holds one kubeconfig per cluster.
func DefaultStateDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "clusters")
}

func (o *Options) defaults() {
	if o.ConfigPath == "" {
		o.ConfigPath = filepath.Join("infra", "local", "kind-config.yaml")
	}
	if o.NodeImage == "" {
		o.NodeImage = NodeImageAuto
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if o.CacheDir == "" {
		o.CacheDir = upstream.DefaultCacheDir()
	}
	if o.Wait == 0 {
		o.Wait = 3 * time.Minute
	}
}

// KubeconfigPath is where a cluster's kubeconfig is kept.
func KubeconfigPath(stateDir, name string) string {
	if stateDir == "" {
		stateDir = DefaultStateDir()
	}
	return filepath.Join(stateDir, name, "kubeconfig")
}

func provider(progress io.Writer) *kind.Provider {
	return kind.NewProvider(kind.ProviderWithDocker(), kind.ProviderWithLogger(logger{progress}))
}

// Up creates the cluster, or reuses a running one of the same name.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	o.defaults()
	cfg, err := LoadConfig(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	if o.Name != "" {
		cfg.Name = o.Name
	}
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if err := checkDocker(ctx); err != nil {
		return nil, err
	}
	c := &Cluster{Name: cfg.Name, Kubeconfig: KubeconfigPath(o.StateDir, cfg.Name)}
	p := provider(o.Progress)
	existing, err := p.List()
	if err != nil {
		return nil, fmt.Errorf("listing kind clusters: %w", err)
	}
	for _, n := range existing {
		if n == cfg.Name {
			if err := os.MkdirAll(filepath.Dir(c.Kubeconfig), 0o700); err != nil {
				return nil, err
			}
			if err := p.ExportKubeConfig(cfg.Name, c.Kubeconfig, false); err != nil {
				return nil, fmt.Errorf("cluster %s exists but its kubeconfig cannot be read (run `cluster down --name %s`): %w", cfg.Name, cfg.Name, err)
			}
			upstream.Say(o.Progress, "cluster: %s is already up; kubeconfig %s", cfg.Name, c.Kubeconfig)
			return c, nil
		}
	}

	start := time.Now()
	image, built, err := chooseNodeImage(ctx, o)
	if err != nil {
		return nil, err
	}
	c.NodeImage = image.Image
	c.Steps = append(c.Steps, image.Steps...)
	c.Steps = append(c.Steps, nodeimage.Step{Name: "node image", Duration: time.Since(start)})
	Adapt(cfg, o.Nodes, built)
	if o.NoHostPorts {
		for i := range cfg.Nodes {
			cfg.Nodes[i].ExtraPortMappings = nil
		}
	}

	start = time.Now()
	upstream.Say(o.Progress, "cluster: creating %s (%d node(s), image %s)", cfg.Name, len(cfg.Nodes), image.Image)
	if err := os.MkdirAll(filepath.Dir(c.Kubeconfig), 0o700); err != nil {
		return nil, err
	}
	err = p.Create(cfg.Name,
		kind.CreateWithV1Alpha4Config(cfg),
		kind.CreateWithNodeImage(image.Image),
		kind.CreateWithKubeconfigPath(c.Kubeconfig),
		kind.CreateWithWaitForReady(o.Wait),
		kind.CreateWithDisplayUsage(false),
		kind.CreateWithDisplaySalutation(false))
	if err != nil {
		if strings.Contains(err.Error(), "already exist") {
			// Another run created it meanwhile: its cluster, not ours to delete.
			return nil, fmt.Errorf("creating kind cluster %s: %w (another run created it meanwhile)", cfg.Name, err)
		}
		diag := diagnose(ctx, cfg.Name)
		// Nothing half-made is left looking like a cluster.
		_ = p.Delete(cfg.Name, c.Kubeconfig)
		return nil, fmt.Errorf("creating kind cluster %s: %w%s", cfg.Name, err, diag)
	}
	c.Steps = append(c.Steps, nodeimage.Step{Name: "cluster created, nodes Ready", Duration: time.Since(start)})
	upstream.Say(o.Progress, "cluster: %s up in %s; export KUBECONFIG=%s", cfg.Name, time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

// chooseNodeImage resolves Options.NodeImage, saying what it chose.
func chooseNodeImage(ctx context.Context, o Options) (*nodeimage.Result, bool, error) {
	build := func(why string) (*nodeimage.Result, bool, error) {
		upstream.Say(o.Progress, "cluster: node image built here (%s)", why)
		r, err := nodeimage.Build(ctx, nodeimage.Options{CacheDir: o.CacheDir, Mirror: o.Mirror, Progress: o.Progress})
		return r, true, err
	}
	switch o.NodeImage {
	case NodeImageBuilt:
		return build("--node-image built")
	case NodeImageUpstream, NodeImageAuto:
		if _, err := docker(ctx, "image", "inspect", UpstreamNodeImage); err == nil {
			upstream.Say(o.Progress, "cluster: node image %s (upstream, present locally)", UpstreamNodeImage)
			return &nodeimage.Result{Image: UpstreamNodeImage, Reused: true}, false, nil
		}
		pullCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		_, pullErr := docker(pullCtx, "pull", UpstreamNodeImage)
		cancel()
		if pullErr == nil {
			upstream.Say(o.Progress, "cluster: node image %s (upstream, pulled)", UpstreamNodeImage)
			return &nodeimage.Result{Image: UpstreamNodeImage}, false, nil
		}
		if o.NodeImage == NodeImageUpstream {
			return nil, false, fmt.Errorf("--node-image upstream: %s cannot be pulled here: %v (use --node-image built)", UpstreamNodeImage, firstLine(pullErr))
		}
		return build(fmt.Sprintf("notice: %s cannot be pulled: %s", UpstreamNodeImage, firstLine(pullErr)))
	default:
		upstream.Say(o.Progress, "cluster: node image %s (--node-image)", o.NodeImage)
		return &nodeimage.Result{Image: o.NodeImage}, false, nil
	}
}

// LoadConfig reads a kind config strictly into kind's v1alpha4 types.
func LoadConfig(path string) (*kindconfig.Cluster, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kind config: %w", err)
	}
	var cfg kindconfig.Cluster
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		return nil, fmt.Errorf("kind config %s: %w", path, err)
	}
	kindconfig.SetDefaultsCluster(&cfg)
	return &cfg, nil
}

// Adapt fits the ADR's kind config to this run: per-node images are
// dropped (the chosen node image applies to all), nodes=1 folds the pools
// into one control-plane node carrying the media pool's label (the only
// pool a workload selects) and port mappings, and a node image built here
// is told the etcd and CoreDNS tags it carries.
func Adapt(cfg *kindconfig.Cluster, nodesWanted int, builtImage bool) {
	for i := range cfg.Nodes {
		cfg.Nodes[i].Image = ""
	}
	if nodesWanted == 1 && len(cfg.Nodes) > 1 {
		cp := kindconfig.Node{Role: kindconfig.ControlPlaneRole, Labels: map[string]string{}}
		for _, n := range cfg.Nodes {
			cp.ExtraPortMappings = append(cp.ExtraPortMappings, n.ExtraPortMappings...)
			cp.ExtraMounts = append(cp.ExtraMounts, n.ExtraMounts...)
		}
		// Every pool on one node: the media pool's label (media-handler's
		// nodeSelector) without its taint (everything else must fit too).
		cp.Labels["darktower.io/pool"] = "media"
		cfg.Nodes = []kindconfig.Node{cp}
	}
	if builtImage {
		cfg.KubeadmConfigPatches = append(cfg.KubeadmConfigPatches, fmt.Sprintf(
			"kind: ClusterConfiguration\netcd:\n  local:\n    imageTag: %q\ndns:\n  imageTag: %q\n",
			nodeimage.EtcdImageTag, nodeimage.CoreDNSImageTag))
	}
}

// validName is kind's own rule for cluster names (they become container
// names and our kubeconfig directory's name).
var validName = regexp.MustCompile(`^[a-z0-9.-]+$`)

// CheckName refuses a name kind would refuse, or one that is a path.
func CheckName(name string) error {
	if name == "" || name == "." || name == ".." || !validName.MatchString(name) {
		return fmt.Errorf("cluster name %q: use lower-case letters, digits, '-' and '.' (e.g. dark-tower, pr-42)", name)
	}
	return nil
}

// Down deletes the cluster and its kubeconfig.
func Down(ctx context.Context, name, stateDir string, progress io.Writer) error {
	if err := CheckName(name); err != nil {
		return err
	}
	start := time.Now()
	path := KubeconfigPath(stateDir, name)
	if err := provider(progress).Delete(name, path); err != nil {
		return fmt.Errorf("deleting kind cluster %s: %w", name, err)
	}
	os.RemoveAll(filepath.Dir(path))
	upstream.Say(progress, "cluster: %s deleted in %s", name, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// List names the kind clusters of the local Docker engine.
func List(ctx context.Context) ([]string, error) {
	names, err := provider(nil).List()
	sort.Strings(names)
	return names, err
}

// NodeStatus is one node container.
type NodeStatus struct {
	Name, Role, Image, State string
}

// Status describes a cluster's node containers.
func Status(ctx context.Context, name string) ([]NodeStatus, error) {
	ns, err := provider(nil).ListNodes(name)
	if err != nil {
		return nil, err
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("no kind cluster named %s (cluster list shows the existing ones)", name)
	}
	var out []NodeStatus
	for _, n := range ns {
		role, _ := n.Role()
		info, _ := docker(ctx, "inspect", "--format", "{{.Config.Image}} {{.State.Status}}", n.String())
		fields := strings.Fields(string(info))
		s := NodeStatus{Name: n.String(), Role: role}
		if len(fields) == 2 {
			s.Image, s.State = fields[0], fields[1]
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RESTConfig reads the cluster's kubeconfig.
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
}

// Client is the pipeline's Kubernetes client for the cluster, and the
// REST config it was made from (for streams such as exec).
func (c *Cluster) Client() (*cluster.Client, *rest.Config, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	client, err := cluster.New(cfg)
	return client, cfg, err
}

// Nodes are the cluster's node containers.
func (c *Cluster) Nodes() ([]nodes.Node, error) { return provider(nil).ListNodes(c.Name) }

// LoadArchive imports an image archive (docker-archive or OCI layout tar)
// into every node's containerd, as `kind load image-archive` does.
func (c *Cluster) LoadArchive(open func() (io.ReadCloser, error)) error {
	ns, err := c.Nodes()
	if err != nil {
		return err
	}
	for _, n := range ns {
		r, err := open()
		if err != nil {
			return err
		}
		err = nodeutils.LoadImageArchive(n, r)
		if cerr := r.Close(); err == nil {
			err = cerr // the writer's own error (see Streamed)
		}
		if err != nil {
			return fmt.Errorf("loading images into node %s: %w", n, err)
		}
	}
	return nil
}

// ExportKubeconfig writes the kubeconfig of a running cluster to path.
func ExportKubeconfig(name, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return provider(nil).ExportKubeConfig(name, path, false)
}

// HasImage reports whether every node's containerd already has ref (a node
// image can carry images preloaded).
func (c *Cluster) HasImage(ref string) bool {
	ns, err := c.Nodes()
	if err != nil || len(ns) == 0 {
		return false
	}
	for _, n := range ns {
		var out strings.Builder
		if err := n.Command("ctr", "--namespace=k8s.io", "images", "ls", "-q").SetStdout(&out).Run(); err != nil {
			return false
		}
		if !slices.Contains(strings.Fields(out.String()), ref) {
			return false
		}
	}
	return true
}

// Tag names an image already in the nodes' containerd once more, e.g. by
// digest (repo@sha256:…), which is how pods pinned by digest find an image
// that was loaded rather than pulled.
func (c *Cluster) Tag(src, dst string) error {
	ns, err := c.Nodes()
	if err != nil {
		return err
	}
	for _, n := range ns {
		if err := nodeutils.ReTagImage(n, src, dst); err != nil {
			return fmt.Errorf("tagging %s as %s in node %s: %w", src, dst, n, err)
		}
	}
	return nil
}

// Streamed adapts a writer of an archive to LoadArchive: the archive is
// written by a goroutine into a pipe, and closing the reader waits for it
// and returns its error — so a failed export is reported as itself, not as
// a truncated stream.
func Streamed(write func(io.Writer) error) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := write(pw)
			pw.CloseWithError(err)
			done <- err
		}()
		return streamed{pr, done}, nil
	}
}

type streamed struct {
	*io.PipeReader
	done chan error
}

func (s streamed) Close() error {
	s.PipeReader.Close()
	return <-s.done
}

func checkDocker(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return errors.New("the docker CLI is not on PATH: kind's Docker provider needs it (and a running engine; DOCKER_HOST is honoured)")
	}
	if _, err := docker(ctx, "version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("no Docker engine answers (set DOCKER_HOST, or start one; test machines: scripts/start-dockerd.sh): %v", firstLine(err))
	}
	return nil
}

// diagnose collects what a failed create leaves behind: the nodes'
// container state and the tail of their logs.
func diagnose(ctx context.Context, name string) string {
	ns, err := provider(nil).ListNodes(name)
	if err != nil || len(ns) == 0 {
		return ""
	}
	var b strings.Builder
	for _, n := range ns {
		logs, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", "15", n.String()).CombinedOutput()
		fmt.Fprintf(&b, "\n--- node %s (last lines of its log):\n%s", n, strings.TrimSpace(string(logs)))
		var out strings.Builder
		if err := n.CommandContext(ctx, "journalctl", "--no-pager", "-n", "25", "-u", "kubelet", "-u", "containerd").SetStdout(&out).SetStderr(&out).Run(); err == nil {
			fmt.Fprintf(&b, "\n--- node %s journal (kubelet, containerd):\n%s", n, strings.TrimSpace(out.String()))
		}
	}
	return b.String()
}

func docker(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i > 0 && len(s)-i < 300 {
		s = s[i+2:]
	}
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// logger sends kind's own status lines (V(0)) to the progress writer.
type logger struct{ w io.Writer }

func (l logger) Warn(message string) { l.Warnf("%s", message) }
func (l logger) Warnf(format string, args ...any) {
	upstream.Say(l.w, "kind: warning: "+format, args...)
}
func (l logger) Error(message string) { l.Errorf("%s", message) }
func (l logger) Errorf(format string, args ...any) {
	upstream.Say(l.w, "kind: error: "+format, args...)
}
func (l logger) V(level kindlog.Level) kindlog.InfoLogger {
	if level > 0 {
		return quiet{}
	}
	return info(l)
}

type info logger

func (i info) Info(message string) { i.Infof("%s", message) }
func (i info) Infof(format string, args ...any) {
	upstream.Say(i.w, "kind: "+strings.TrimSpace(format), args...)
}
func (i info) Enabled() bool { return i.w != nil }

type quiet struct{}

func (quiet) Info(string)          {}
func (quiet) Infof(string, ...any) {}
func (quiet) Enabled() bool        { return false }
