// Package upstream builds the pinned upstream components the pipeline's
// clusters run — Kubernetes, etcd, kwok, CoreDNS, kube-router,
// local-path-provisioner, pause — from the Go module proxy, once, into a
// cache keyed by version. Each is built in its own throwaway module (their
// dependency graphs conflict with each other and with the pipeline's), so
// nothing of their source is kept in this repository.
package upstream

import (
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

// Versions pins every upstream component of the simulated and the real
// cluster, in one place.
var Versions = struct {
	Kubernetes string // k8s.io/kubernetes: control plane, kubelet, kubeadm, kubectl, kube-proxy
	Etcd       string // go.etcd.io/etcd/server/v3: 3.6 serves the watch progress requests client-go's streaming lists need (Debian's 3.4 does not)
	Kwok       string // sigs.k8s.io/kwok: the simulated cluster's nodes and pods
	Kind       string // sigs.k8s.io/kind: node entrypoint, systemd units, containerd config (and the cluster API, in go.mod)
	CoreDNS    string // github.com/coredns/coredns: the version kubeadm v1.34 deploys
	KubeRouter string // github.com/cloudnativelabs/kube-router/v2: pod network and NetworkPolicy with iptables + ipset
	LocalPath  string // github.com/rancher/local-path-provisioner: the default StorageClass
	Pause      string // the sandbox image's tag (pause.c from k8s.io/kubernetes's build/pause)
	Debian     string // the node's and the Debian-based images' suite
}{
	Kubernetes: "v1.34.4", Etcd: "v3.6.16", Kwok: "v0.8.0", Kind: "v0.33.0",
	CoreDNS: "v1.12.1", KubeRouter: "v2.1.0", LocalPath: "v0.0.30", Pause: "3.10.1",
	Debian: "trixie",
}

// DefaultCacheDir holds everything built here, keyed by version.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "upstream")
}

// Say prints one progress line.
func Say(w io.Writer, f string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, f+"\n", a...)
	}
}

// Exists reports whether every path exists.
func Exists(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// GoCmd runs the go command in dir with the project's toolchain, static
// and outside any workspace.
func GoCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return cmdrun.Cmd{Dir: dir, Env: append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOWORK=off"), TailLines: 40}.Run(ctx, "go", args...)
}

// Module is `go mod download -json`'s answer.
type Module struct {
	Dir, GoMod, Info, Error string
}

// Download fetches module@version through the proxy.
func Download(ctx context.Context, dir, module string) (*Module, error) {
	out, err := GoCmd(ctx, dir, "mod", "download", "-json", module)
	if err != nil {
		return nil, err
	}
	var m Module
	if err := json.Unmarshal(out, &m); err != nil || m.Error != "" {
		return nil, fmt.Errorf("go mod download %s: %v %s", module, err, m.Error)
	}
	return &m, nil
}

// ReleaseTime is the module version's publication time (its .info),
// used as the build date stamped into binaries so that it is fixed.
func (m *Module) ReleaseTime() time.Time {
	raw, err := os.ReadFile(m.Info)
	if err != nil {
		return time.Unix(0, 0).UTC()
	}
	var info struct{ Time time.Time }
	if json.Unmarshal(raw, &info) != nil || info.Time.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return info.Time.UTC()
}

// ThrowawayModule writes a module's files into src (created if needed).
func ThrowawayModule(src string, files map[string]string) error {
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

// GoBuild builds stripped, path-independent binaries of pkgs in the
// module at src into dir (emptied first), as name, or under their own
// names when name is "". ldflags are added to -s -w.
func GoBuild(ctx context.Context, src, dir, name, ldflags string, pkgs ...string) error {
	os.RemoveAll(dir)
	out := dir + string(filepath.Separator) + name
	flags := strings.TrimSpace("-s -w " + ldflags)
	_, err := GoCmd(ctx, src, append([]string{"build", "-trimpath", "-ldflags", flags, "-o", out}, pkgs...)...)
	return err
}

// ReplaceDir moves a finished build into place, so a cache directory is
// either complete or absent.
func ReplaceDir(tmp, final string) error {
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}
