package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// State is what `sim up` leaves for status, kubeconfig and down: the
// processes it started and where the cluster answers.
type State struct {
	Dir        string    `json:"dir"`
	Server     string    `json:"server"`
	Kubeconfig string    `json:"kubeconfig"`
	Processes  []Process `json:"processes"`
	Started    time.Time `json:"started"`
	Kubernetes string    `json:"kubernetes"`
}

// Process is one started component.
type Process struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Binary string `json:"binary"`
	Log    string `json:"log"`
}

const stateFile = "state.json"

// DefaultStateDir is where the one simulated cluster of a user lives.
func DefaultStateDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "sim", "cluster")
}

// Node pools the simulated nodes stand in for (terraform/modules/node-pool).
const (
	PoolLabel = "darktower.io/pool"
	KwokNode  = "kwok.x-k8s.io/node"
)

// Nodes are the simulated nodes: two general, one media (tainted like the
// dedicated pool).
var Nodes = []struct {
	Name, Pool string
	Dedicated  bool
}{{"sim-general-0", "general", false}, {"sim-general-1", "general", false}, {"sim-media-0", "media", true}}

// ReadState reads dir's state; a missing file means no cluster.
func ReadState(dir string) (*State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no simulated cluster in %s (run `go run . sim up`)", dir)
	}
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(raw, &s)
}

// alive reports whether pid is still the process that was started (the
// PID was not reused by something else).
func (p Process) alive() bool {
	if syscall.Kill(p.PID, 0) != nil {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil {
		return false
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
		return false // exited, not yet reaped
	}
	return strings.HasPrefix(string(cmdline), p.Binary)
}

// Up starts a cluster in dir (or reports the one already running there).
func Up(ctx context.Context, dir string, tools *Tools, progress io.Writer) (*State, error) {
	if s, err := ReadState(dir); err == nil {
		if err := s.Check(ctx); err == nil {
			say(progress, "sim: already up (%s), kubeconfig %s", s.Server, s.Kubeconfig)
			return s, nil
		}
		say(progress, "sim: the cluster in %s is not healthy; starting it again", dir)
		if err := Down(dir, progress); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := writePKI(dir)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]
	s := &State{Dir: dir, Server: fmt.Sprintf("https://127.0.0.1:%d", apiPort), Kubeconfig: filepath.Join(dir, "kubeconfig"),
		Started: start, Kubernetes: Versions.Kubernetes}
	if err := writeKubeconfig(s.Kubeconfig, s.Server, p); err != nil {
		return nil, err
	}
	fail := func(err error) (*State, error) {
		_ = s.save()
		_ = Down(dir, nil)
		return nil, err
	}
	// etcd
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := s.start("etcd", tools.Etcd, "--name", "sim", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("sim=http://127.0.0.1:%d", etcdPeer), "--log-level", "warn"); err != nil {
		return fail(err)
	}
	if err := waitHTTP(ctx, http.DefaultClient, etcdURL+"/health", 20*time.Second); err != nil {
		return fail(fmt.Errorf("etcd did not become healthy: %w (log: %s)", err, s.log("etcd")))
	}
	say(progress, "sim: etcd up on %s", etcdURL)
	// kube-apiserver
	if err := s.start("kube-apiserver", tools.APIServer,
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort), "--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file", p.ServerCert, "--tls-private-key-file", p.ServerKey, "--client-ca-file", p.CA,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p.SAPub, "--service-account-signing-key-file", p.SAKey,
		"--service-cluster-ip-range", "10.96.0.0/16", "--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction", "--profiling=false", "--v=0"); err != nil {
		return fail(err)
	}
	client, err := p.httpClient()
	if err != nil {
		return fail(err)
	}
	if err := waitHTTP(ctx, client, s.Server+"/readyz", 90*time.Second); err != nil {
		return fail(fmt.Errorf("kube-apiserver did not become ready: %w (log: %s)", err, s.log("kube-apiserver")))
	}
	say(progress, "sim: kube-apiserver %s ready on %s", Versions.Kubernetes, s.Server)
	// controllers, scheduler, kwok
	if err := s.start("kube-controller-manager", tools.ControllerManager, "--kubeconfig", s.Kubeconfig,
		"--authentication-kubeconfig", s.Kubeconfig, "--authorization-kubeconfig", s.Kubeconfig,
		"--leader-elect=false", "--secure-port=0", "--cert-dir", filepath.Join(dir, "kcm-certs"),
		"--service-account-private-key-file", p.SAKey, "--root-ca-file", p.CA,
		"--cluster-signing-cert-file", p.CA, "--cluster-signing-key-file", p.CAKey,
		"--controllers", "*,-nodeipam", "--v=0"); err != nil {
		return fail(err)
	}
	if err := s.start("kube-scheduler", tools.Scheduler, "--kubeconfig", s.Kubeconfig,
		"--authentication-kubeconfig", s.Kubeconfig, "--authorization-kubeconfig", s.Kubeconfig,
		"--leader-elect=false", "--secure-port=0", "--v=0"); err != nil {
		return fail(err)
	}
	if err := s.start("kwok", tools.Kwok, "--kubeconfig", s.Kubeconfig, "--config", tools.KwokStages,
		"--manage-nodes-with-annotation-selector", KwokNode+"=fake",
		// Nodes renew leases like kubelets; without this they go NotReady
		// after the node monitor's grace period and their pods unready.
		"--node-lease-duration-seconds", "40",
		"--server-address", fmt.Sprintf("127.0.0.1:%d", kwokPort)); err != nil {
		return fail(err)
	}
	if err := s.save(); err != nil {
		return fail(err)
	}
	cs, err := s.Clientset()
	if err != nil {
		return fail(err)
	}
	if err := createNodes(ctx, cs); err != nil {
		return fail(err)
	}
	if err := waitNodesReady(ctx, cs, 60*time.Second); err != nil {
		return fail(fmt.Errorf("%w (kwok log: %s)", err, s.log("kwok")))
	}
	say(progress, "sim: %d simulated nodes Ready; cluster up in %s; kubeconfig %s", len(Nodes), time.Since(start).Round(100*time.Millisecond), s.Kubeconfig)
	return s, nil
}

func (s *State) save() error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, stateFile), raw, 0o600)
}

func (s *State) log(name string) string { return filepath.Join(s.Dir, name+".log") }

// start launches a component in its own session (it outlives `sim up`).
func (s *State) start(name, bin string, args ...string) error {
	logf, err := os.Create(s.log(name))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go cmd.Wait() // reap it if it exits while this process lives
	s.Processes = append(s.Processes, Process{Name: name, PID: cmd.Process.Pid, Binary: bin, Log: s.log(name)})
	return s.save()
}

// Check reports whether every process runs and the API server is ready.
func (s *State) Check(ctx context.Context) error {
	for _, p := range s.Processes {
		if !p.alive() {
			return fmt.Errorf("%s (pid %d) is not running; see %s", p.Name, p.PID, p.Log)
		}
	}
	cfg, err := s.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver /readyz: %w", err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("kube-apiserver /readyz: %s", body)
	}
	return nil
}

// RESTConfig is client-go's configuration for the cluster.
func (s *State) RESTConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
}

// Clientset is a typed client for the cluster.
func (s *State) Clientset() (*kubernetes.Clientset, error) {
	cfg, err := s.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Down stops exactly the processes Up started (newest first) and removes
// the cluster's state.
func Down(dir string, progress io.Writer) error {
	s, err := ReadState(dir)
	if err != nil {
		return os.RemoveAll(dir) // nothing recorded: just clear leftovers
	}
	for i := len(s.Processes) - 1; i >= 0; i-- {
		p := s.Processes[i]
		if !p.alive() {
			continue
		}
		_ = syscall.Kill(p.PID, syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for p.alive() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.alive() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
		say(progress, "sim: stopped %s (pid %d)", p.Name, p.PID)
	}
	return os.RemoveAll(dir)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(ctx context.Context, c *http.Client, url string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *pki) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(p.CA)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(p.AdminCert, p.AdminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}, nil
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: darktower-sim
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: darktower-admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: darktower-sim
  context:
    cluster: darktower-sim
    user: darktower-admin
current-context: darktower-sim
`, server, p.CA, p.AdminCert, p.AdminKey)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func createNodes(ctx context.Context, cs *kubernetes.Clientset) error {
	for _, n := range Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name,
				Annotations: map[string]string{KwokNode: "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
					"type": "kwok", PoolLabel: n.Pool}},
			Status: corev1.NodeStatus{
				Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"),
					corev1.ResourcePods: resource.MustParse("110")},
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"),
					corev1.ResourcePods: resource.MustParse("110")},
			},
		}
		if n.Dedicated {
			node.Spec.Taints = []corev1.Taint{{Key: PoolLabel, Value: n.Pool, Effect: corev1.TaintEffectNoSchedule}}
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node %s: %w", n.Name, err)
		}
	}
	return nil
}

func waitNodesReady(ctx context.Context, cs *kubernetes.Clientset, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, n := range list.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready == len(Nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d simulated nodes Ready after %s", ready, len(Nodes), within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
