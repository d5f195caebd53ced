package upstream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KubeBinaries are the Kubernetes binaries, built and version-stamped.
type KubeBinaries struct {
	Dir     string // holds one file per component, named after it
	Version string
}

// Path is a component's binary (kubelet, kubeadm, kube-apiserver, ...).
func (k *KubeBinaries) Path(component string) string { return filepath.Join(k.Dir, component) }

// KubeComponents are the binaries built from k8s.io/kubernetes: the
// simulated cluster runs the first three; a kind node carries kubelet,
// kubeadm and kubectl and runs the others as images.
var KubeComponents = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler",
	"kube-proxy", "kubelet", "kubeadm", "kubectl"}

// Kubernetes returns the binaries of Versions.Kubernetes, building them
// once. The version stamps (component-base and client-go) matter: without
// them kubeadm and kubelet report v0.0.0-master and kubeadm refuses to
// pair with the control plane.
func Kubernetes(ctx context.Context, cacheDir string, progress io.Writer) (*KubeBinaries, error) {
	v := Versions.Kubernetes
	k := &KubeBinaries{Dir: filepath.Join(cacheDir, "bin", "kubernetes-"+v), Version: v}
	var paths []string
	for _, c := range KubeComponents {
		paths = append(paths, k.Path(c))
	}
	if Exists(paths...) {
		return k, nil
	}
	unlock, err := Lock(cacheDir, "kubernetes-"+v, progress)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if Exists(paths...) { // built by whoever held the lock
		return k, nil
	}
	start := time.Now()
	Say(progress, "upstream: building Kubernetes %s (%s) from the Go module proxy (once; ~10 min on 2 cores)", v, strings.Join(KubeComponents, ", "))
	src := filepath.Join(cacheDir, "src", "kubernetes-"+v)
	if err := ThrowawayModule(src, map[string]string{"go.mod": "module darktower.local/upstream-kubernetes\n\ngo 1.24.0\n"}); err != nil {
		return nil, err
	}
	info, err := Download(ctx, src, "k8s.io/kubernetes@"+v)
	if err != nil {
		return nil, err
	}
	staging, err := StagingModules(info.GoMod)
	if err != nil {
		return nil, err
	}
	staged := "v0" + strings.TrimPrefix(v, "v1") // v1.34.4 → v0.34.4
	var gomod strings.Builder
	fmt.Fprintf(&gomod, "module darktower.local/upstream-kubernetes\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\n", v)
	for _, m := range staging {
		fmt.Fprintf(&gomod, "replace %s => %s %s\n", m, m, staged)
	}
	if err := ThrowawayModule(src, map[string]string{"go.mod": gomod.String(),
		"doc.go": "// Package upstreamkubernetes only anchors the build.\npackage upstreamkubernetes\n"}); err != nil {
		return nil, err
	}
	var pkgs []string
	for _, c := range KubeComponents {
		pkgs = append(pkgs, "k8s.io/kubernetes/cmd/"+c)
	}
	tmp := k.Dir + ".tmp"
	if err := GoBuild(ctx, src, tmp, "", VersionLDFlags(v, info.ReleaseTime()), pkgs...); err != nil {
		return nil, err
	}
	if err := ReplaceDir(tmp, k.Dir); err != nil {
		return nil, err
	}
	Say(progress, "upstream: built Kubernetes %s in %s", v, time.Since(start).Round(time.Second))
	return k, nil
}

// VersionLDFlags stamps a Kubernetes version the way its release build
// does (hack/lib/version.sh), into both places components read it from.
func VersionLDFlags(version string, built time.Time) string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		for _, kv := range [][2]string{{"gitVersion", version}, {"gitMajor", major}, {"gitMinor", minor},
			{"gitTreeState", "clean"}, {"buildDate", built.Format(time.RFC3339)}} {
			flags = append(flags, fmt.Sprintf("-X %s.%s=%s", pkg, kv[0], kv[1]))
		}
	}
	return strings.Join(flags, " ")
}

// StagingModules lists the modules k8s.io/kubernetes's go.mod replaces
// with ./staging directories (the throwaway module points them at their
// published releases instead).
func StagingModules(gomod string) ([]string, error) {
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
