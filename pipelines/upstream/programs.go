package upstream

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Program is one Go program built from a published module.
type Program struct {
	Name    string // binary name
	Module  string // module path
	Version string
	Package string // package to build ("" = the module's root, built through a wrapper main)
	Main    string // a wrapper main.go, when the module's entry point is a function (etcd)
}

// The programs besides Kubernetes itself.
var (
	EtcdProgram = Program{Name: "etcd", Module: "go.etcd.io/etcd/server/v3", Version: Versions.Etcd,
		// The repository's root module points at local directories, so the
		// server module's own entry point is wrapped instead.
		Main: "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n"}
	KwokProgram       = Program{Name: "kwok", Module: "sigs.k8s.io/kwok", Version: Versions.Kwok, Package: "sigs.k8s.io/kwok/cmd/kwok"}
	CoreDNSProgram    = Program{Name: "coredns", Module: "github.com/coredns/coredns", Version: Versions.CoreDNS, Package: "github.com/coredns/coredns"}
	KubeRouterProgram = Program{Name: "kube-router", Module: "github.com/cloudnativelabs/kube-router/v2", Version: Versions.KubeRouter, Package: "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"}
	LocalPathProgram  = Program{Name: "local-path-provisioner", Module: "github.com/rancher/local-path-provisioner", Version: Versions.LocalPath, Package: "github.com/rancher/local-path-provisioner"}
)

// Built is a program in the cache and the module it came from.
type Built struct {
	Binary    string
	ModuleDir string // the module's source in the module cache (for its published data files)
}

// Build returns p's binary, building it once into cacheDir.
func (p Program) Build(ctx context.Context, cacheDir string, progress io.Writer) (*Built, error) {
	key := p.Name + "-" + p.Version
	bin := filepath.Join(cacheDir, "bin", key)
	src := filepath.Join(cacheDir, "src", key)
	unlock, err := Lock(cacheDir, key, progress)
	if err != nil {
		return nil, err
	}
	defer unlock()
	files := map[string]string{"go.mod": fmt.Sprintf("module darktower.local/upstream-%s\n\ngo 1.24.0\n\nrequire %s %s\n", p.Name, p.Module, p.Version)}
	if p.Main != "" {
		files["main.go"] = p.Main
	} else {
		files["doc.go"] = "// Package main only anchors the build.\npackage main\n"
	}
	if err := ThrowawayModule(src, files); err != nil {
		return nil, err
	}
	info, err := Download(ctx, src, p.Module+"@"+p.Version)
	if err != nil {
		return nil, err
	}
	b := &Built{Binary: filepath.Join(bin, p.Name), ModuleDir: info.Dir}
	if Exists(b.Binary) {
		return b, nil
	}

	start := time.Now()
	Say(progress, "upstream: building %s %s from the Go module proxy (once)", p.Name, p.Version)
	pkg := p.Package
	if p.Main != "" {
		pkg = "."
	}
	tmp := bin + ".tmp"
	if err := GoBuild(ctx, src, tmp, p.Name, "", pkg); err != nil {
		return nil, fmt.Errorf("building %s %s: %w", p.Name, p.Version, err)
	}
	if err := ReplaceDir(tmp, bin); err != nil {
		return nil, err
	}
	Say(progress, "upstream: built %s in %s", p.Name, time.Since(start).Round(time.Second))
	return b, nil
}

// Pause builds the sandbox ("pause") binary from the C source that
// k8s.io/kubernetes publishes (build/pause/linux/pause.c), statically
// linked with the host's C compiler: it is the one component that is not
// Go.
func Pause(ctx context.Context, cacheDir string, progress io.Writer) (string, error) {
	bin := filepath.Join(cacheDir, "bin", "pause-"+Versions.Pause, "pause")
	if Exists(bin) {
		return bin, nil
	}
	unlock, err := Lock(cacheDir, "pause-"+Versions.Pause, progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	if Exists(bin) {
		return bin, nil
	}
	src := filepath.Join(cacheDir, "src", "pause-"+Versions.Pause)
	if err := ThrowawayModule(src, map[string]string{"go.mod": "module darktower.local/upstream-pause\n\ngo 1.24.0\n"}); err != nil {
		return "", err
	}
	info, err := Download(ctx, src, "k8s.io/kubernetes@"+Versions.Kubernetes)
	if err != nil {
		return "", err
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		return "", fmt.Errorf("building pause needs a C compiler (Debian: apt-get install gcc libc6-dev): %w", err)
	}
	Say(progress, "upstream: compiling pause %s (k8s.io/kubernetes %s build/pause/linux/pause.c)", Versions.Pause, Versions.Kubernetes)
	tmp := filepath.Dir(bin) + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, cc, "-Os", "-Wall", "-Werror", "-static", "-s",
		"-DVERSION=v"+Versions.Pause+"-darktower", "-o", filepath.Join(tmp, "pause"),
		filepath.Join(info.Dir, "build", "pause", "linux", "pause.c"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compiling pause.c: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	return bin, ReplaceDir(tmp, filepath.Dir(bin))
}
