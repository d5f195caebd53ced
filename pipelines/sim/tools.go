// Package sim is the simulated cluster: a real kube-apiserver,
// kube-controller-manager and kube-scheduler on etcd, with nodes and pods
// simulated by kwok. It gives the pipeline a Kubernetes API with real
// semantics (server-side apply, CRD schemas, admission, Deployments making
// ReplicaSets and Pods, pods becoming Ready) on any machine, with no
// container runtime.
package sim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/darktower/delivery/pipelines/upstream"
)

// Versions pins what the simulated cluster runs: the same table as the
// real cluster's (pipelines/upstream).
var Versions = &upstream.Versions

// Tools are the binaries the cluster runs.
type Tools struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kwok string
	KwokStages                                          string // kwok's published stage definitions (node and pod lifecycles)
}

// DefaultCacheDir holds built tools (shared with the real cluster's
// node image: pipelines/upstream), keyed by version.
func DefaultCacheDir() string { return upstream.DefaultCacheDir() }

// EnsureTools returns the tools, building each missing one once from the
// Go module proxy into cacheDir.
func EnsureTools(ctx context.Context, cacheDir string, progress io.Writer) (*Tools, error) {
	kube, err := upstream.Kubernetes(ctx, cacheDir, progress)
	if err != nil {
		return nil, err
	}
	etcd, err := upstream.EtcdProgram.Build(ctx, cacheDir, progress)
	if err != nil {
		return nil, err
	}
	kwok, err := upstream.KwokProgram.Build(ctx, cacheDir, progress)
	if err != nil {
		return nil, err
	}
	stages := filepath.Join(filepath.Dir(kwok.Binary), "stages.yaml")
	if !upstream.Exists(stages) {
		if err := writeKwokStages(kwok.ModuleDir, stages); err != nil {
			return nil, err
		}
	}
	return &Tools{Etcd: etcd.Binary, APIServer: kube.Path("kube-apiserver"),
		ControllerManager: kube.Path("kube-controller-manager"), Scheduler: kube.Path("kube-scheduler"),
		Kwok: kwok.Binary, KwokStages: stages}, nil
}

func say(w io.Writer, f string, a ...any) { upstream.Say(w, f, a...) }

// kwokStageSets are the published stage definitions kwok runs with:
// nodes become Ready at once and keep a lease; pods are created, become
// Ready, and are deleted like real ones, without artificial delays.
var kwokStageSets = []string{"node/fast", "node/heartbeat-with-lease", "pod/fast"}

func writeKwokStages(moduleDir, path string) error {
	var stages []string
	for _, set := range kwokStageSets {
		files, _ := filepath.Glob(filepath.Join(moduleDir, "kustomize", "stage", set, "*.yaml"))
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
		return fmt.Errorf("kwok %s: no stage definitions under %s/kustomize/stage", Versions.Kwok, moduleDir)
	}
	return os.WriteFile(path, []byte(strings.Join(stages, "\n---\n")+"\n"), 0o644)
}
