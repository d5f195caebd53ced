// Package sim is the simulated cluster: a real kube-apiserver,
// kube-controller-manager and kube-scheduler on etcd, with nodes and pods
// simulated by kwok. It gives the pipeline a Kubernetes API with real
// semantics (server-side apply, CRD schemas, admission, Deployments making
// ReplicaSets and Pods, pods becoming Ready) on any machine, with no
// container runtime.
package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/darktower/delivery/internal/cmdrun"
)

// Versions pins what the simulated cluster runs, in one place.
var Versions = struct {
	Kubernetes string // kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes)
	Kwok       string // sigs.k8s.io/kwok: simulated nodes and pods
	Etcd       string // go.etcd.io/etcd/server/v3: 3.6 serves the watch progress requests client-go's streaming lists need (Debian's 3.4.23 does not)
}{Kubernetes: "v1.34.4", Kwok: "v0.8.0", Etcd: "v3.6.16"}

// Tools are the binaries the cluster runs.
type Tools struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kwok string
	KwokStages                                          string // kwok's published stage definitions (node and pod lifecycles)
}

// DefaultCacheDir holds built tools, keyed by version.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "sim")
}

// EnsureTools returns the tools, building each missing one once from the
// Go module proxy (each in its own throwaway module: their Kubernetes
// versions conflict) into cacheDir.
func EnsureTools(ctx context.Context, cacheDir string, progress io.Writer) (*Tools, error) {
	kubeBin := filepath.Join(cacheDir, "bin", "kubernetes-"+Versions.Kubernetes)
	kwokBin := filepath.Join(cacheDir, "bin", "kwok-"+Versions.Kwok)
	etcdBin := filepath.Join(cacheDir, "bin", "etcd-"+Versions.Etcd)
	t := &Tools{Etcd: filepath.Join(etcdBin, "etcd"),
		APIServer:         filepath.Join(kubeBin, "kube-apiserver"),
		ControllerManager: filepath.Join(kubeBin, "kube-controller-manager"),
		Scheduler:         filepath.Join(kubeBin, "kube-scheduler"),
		Kwok:              filepath.Join(kwokBin, "kwok"),
		KwokStages:        filepath.Join(kwokBin, "stages.yaml"),
	}
	if !exists(t.APIServer, t.ControllerManager, t.Scheduler) {
		if err := buildKubernetes(ctx, cacheDir, kubeBin, progress); err != nil {
			return nil, err
		}
	}
	if !exists(t.Etcd) {
		if err := buildEtcd(ctx, cacheDir, etcdBin, progress); err != nil {
			return nil, err
		}
	}
	if !exists(t.Kwok, t.KwokStages) {
		if err := buildKwok(ctx, cacheDir, kwokBin, progress); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func exists(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func say(w io.Writer, f string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, f+"\n", a...)
	}
}

// goCmd runs the go command in dir with the project's toolchain.
func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return cmdrun.Cmd{Dir: dir, Env: append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOWORK=off"), TailLines: 40}.Run(ctx, "go", args...)
}

// moduleInfo is `go mod download -json`'s answer.
type moduleInfo struct {
	Dir, GoMod, Error string
}

func download(ctx context.Context, dir, module string) (*moduleInfo, error) {
	out, err := goCmd(ctx, dir, "mod", "download", "-json", module)
	if err != nil {
		return nil, err
	}
	var m moduleInfo
	if err := json.Unmarshal(out, &m); err != nil || m.Error != "" {
		return nil, fmt.Errorf("go mod download %s: %v %s", module, err, m.Error)
	}
	return &m, nil
}

// buildKubernetes builds the control plane from k8s.io/kubernetes, whose
// go.mod points its staging modules at ./staging: the throwaway module
// replaces each with its published release instead.
func buildKubernetes(ctx context.Context, cacheDir, bin string, progress io.Writer) error {
	start := time.Now()
	say(progress, "sim: building kube-apiserver, kube-controller-manager, kube-scheduler %s from the Go module proxy (once; ~10 min on 2 cores)", Versions.Kubernetes)
	src := filepath.Join(cacheDir, "src", "kubernetes-"+Versions.Kubernetes)
	if err := throwawayModule(src, map[string]string{"go.mod": "module darktower.local/sim-kubernetes\n\ngo 1.24.0\n"}); err != nil {
		return err
	}
	info, err := download(ctx, src, "k8s.io/kubernetes@"+Versions.Kubernetes)
	if err != nil {
		return err
	}
	staging, err := stagingModules(info.GoMod)
	if err != nil {
		return err
	}
	staged := "v0" + strings.TrimPrefix(Versions.Kubernetes, "v1") // v1.34.4 → v0.34.4
	var gomod strings.Builder
	fmt.Fprintf(&gomod, "module darktower.local/sim-kubernetes\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\n", Versions.Kubernetes)
	for _, m := range staging {
		fmt.Fprintf(&gomod, "replace %s => %s %s\n", m, m, staged)
	}
	if err := throwawayModule(src, map[string]string{"go.mod": gomod.String(),
		"doc.go": "// Package simkubernetes only anchors the build.\npackage simkubernetes\n"}); err != nil {
		return err
	}
	tmp := bin + ".tmp"
	if err := goBuild(ctx, src, tmp, "",
		"k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes/cmd/kube-scheduler"); err != nil {
		return err
	}
	if err := replaceDir(tmp, bin); err != nil {
		return err
	}
	say(progress, "sim: built the control plane in %s", time.Since(start).Round(time.Second))
	return nil
}

// stagingModules lists the modules k8s.io/kubernetes's go.mod replaces
// with ./staging directories.
func stagingModules(gomod string) ([]string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "replace "))
		if len(fields) == 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "./staging/") {
			mods = append(mods, fields[0])
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%s: no staging replacements found", gomod)
	}
	return mods, sc.Err()
}

// buildEtcd builds the etcd server from its published module (its
// repository's root module points at local directories, so the server
// module's own entry point is wrapped instead).
func buildEtcd(ctx context.Context, cacheDir, bin string, progress io.Writer) error {
	start := time.Now()
	say(progress, "sim: building etcd %s from the Go module proxy (once; ~1 min)", Versions.Etcd)
	src := filepath.Join(cacheDir, "src", "etcd-"+Versions.Etcd)
	gomod := fmt.Sprintf("module darktower.local/sim-etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n", Versions.Etcd)
	main := "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n"
	if err := throwawayModule(src, map[string]string{"go.mod": gomod, "main.go": main}); err != nil {
		return err
	}
	tmp := bin + ".tmp"
	if err := goBuild(ctx, src, tmp, "etcd", "."); err != nil {
		return err
	}
	if err := replaceDir(tmp, bin); err != nil {
		return err
	}
	say(progress, "sim: built etcd in %s", time.Since(start).Round(time.Second))
	return nil
}

// throwawayModule writes a module's files into src (created if needed).
func throwawayModule(src string, files map[string]string) error {
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// goBuild builds stripped, path-independent binaries of pkgs in the
// module at src into dir (emptied first), as name, or under their own
// names when name is "".
func goBuild(ctx context.Context, src, dir, name string, pkgs ...string) error {
	os.RemoveAll(dir)
	out := dir + string(filepath.Separator) + name
	_, err := goCmd(ctx, src, append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", out}, pkgs...)...)
	return err
}

// replaceDir moves a finished build into place, so a cache directory is
// either complete or absent.
func replaceDir(tmp, final string) error {
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

// kwokStageSets are the published stage definitions kwok runs with:
// nodes become Ready at once and keep a lease; pods are created, become
// Ready, and are deleted like real ones, without artificial delays.
var kwokStageSets = []string{"node/fast", "node/heartbeat-with-lease", "pod/fast"}

func buildKwok(ctx context.Context, cacheDir, bin string, progress io.Writer) error {
	start := time.Now()
	say(progress, "sim: building kwok %s from the Go module proxy (once)", Versions.Kwok)
	src := filepath.Join(cacheDir, "src", "kwok-"+Versions.Kwok)
	gomod := fmt.Sprintf("module darktower.local/sim-kwok\n\ngo 1.24.0\n\nrequire sigs.k8s.io/kwok %s\n", Versions.Kwok)
	if err := throwawayModule(src, map[string]string{"go.mod": gomod, "doc.go": "// Package simkwok only anchors the build.\npackage simkwok\n"}); err != nil {
		return err
	}
	info, err := download(ctx, src, "sigs.k8s.io/kwok@"+Versions.Kwok)
	if err != nil {
		return err
	}
	tmp := bin + ".tmp"
	if err := goBuild(ctx, src, tmp, "kwok", "sigs.k8s.io/kwok/cmd/kwok"); err != nil {
		return err
	}
	var stages []string
	for _, set := range kwokStageSets {
		files, _ := filepath.Glob(filepath.Join(info.Dir, "kustomize", "stage", set, "*.yaml"))
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			stages = append(stages, strings.TrimSpace(string(b)))
		}
	}
	if len(stages) == 0 {
		return fmt.Errorf("kwok %s: no stage definitions under %s/kustomize/stage", Versions.Kwok, info.Dir)
	}
	if err := os.WriteFile(filepath.Join(tmp, "stages.yaml"), []byte(strings.Join(stages, "\n---\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := replaceDir(tmp, bin); err != nil {
		return err
	}
	say(progress, "sim: built kwok in %s", time.Since(start).Round(time.Second))
	return nil
}
