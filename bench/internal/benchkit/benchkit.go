// Package benchkit is what the build benchmarks share: the services and
// platforms they build, peer tools installed from the Go module proxy into
// a cache outside the repository, an in-process registry holding the
// skeleton base, and commands run with their wall time and peak memory.
package benchkit

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Services and Platforms are what a full benchmark builds.
var (
	Services  = []string{"ac-service", "global-controller", "meeting-controller", "media-handler"}
	Platforms = []catalog.Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}}
)

// Ldflags are build-all's link flags (its version stamps aside).
const Ldflags = "-s -w -buildid="

// Env is the environment every tool runs with, plus extra.
func Env(extra ...string) []string {
	return append(os.Environ(), append([]string{"CGO_ENABLED=0", "GOFLAGS=-mod=readonly"}, extra...)...)
}

// Usage is what one command cost.
type Usage struct {
	Wall    time.Duration
	CPU     time.Duration // user + system time of the process and the children it waited for
	PeakRSS int64         // bytes: the largest resident set of the process and the children it waited for
}

// Add accumulates a step into a sequence: walls add up, the peak is the
// largest step's.
func (u *Usage) Add(o Usage) {
	u.Wall += o.Wall
	u.CPU += o.CPU
	u.PeakRSS = max(u.PeakRSS, o.PeakRSS)
}

// Run runs name in dir with environ, stdout into stdout (nil: discarded),
// and returns its wall time and peak RSS; a failure carries its stderr.
func Run(dir string, environ []string, stdout io.Writer, name string, args ...string) (Usage, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, environ
	var errBuf strings.Builder
	cmd.Stdout, cmd.Stderr = stdout, &errBuf
	if stdout == nil {
		cmd.Stdout = io.Discard
	}
	t := time.Now()
	err := cmd.Run()
	u := Usage{Wall: time.Since(t)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			u.PeakRSS = ru.Maxrss * 1024 // Linux reports KiB
		}
		u.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return u, fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, tail(errBuf.String(), 4000))
	}
	return u, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Timed is f's wall time.
func Timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

// GoTool is a peer CLI installed with `go install pkg@version`.
type GoTool struct {
	Name    string   // the binary's name
	Package string   // the main package's import path
	Version string   // the module version
	Env     []string // extra environment for the install (a Go toolchain, an experiment)
}

// Install builds t once into the user cache (never into the repository)
// and returns the binary's path.
func (t GoTool) Install() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "darktower", "bench", t.Name+"-"+t.Version)
	bin := filepath.Join(dir, t.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Printf("installing %s %s from the Go module proxy into %s (once) ...\n", t.Name, t.Version, dir)
	start := time.Now()
	environ := append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir)
	if _, err := Run(os.TempDir(), append(environ, t.Env...), nil, "go", "install", t.Package+"@"+t.Version); err != nil {
		return "", fmt.Errorf("installing %s: %w", t.Name, err)
	}
	fmt.Printf("installed %s in %s\n", t.Name, time.Since(start).Round(time.Second))
	return bin, nil
}

// Registry is an in-process OCI registry on loopback (plain HTTP, which
// go-containerregistry and the tools built on it use for 127.0.0.1).
type Registry struct {
	Host  string // 127.0.0.1:port
	close func()
}

// ServeRegistry starts a registry; Close stops it.
func ServeRegistry() *Registry {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	return &Registry{Host: strings.TrimPrefix(srv.URL, "http://"), close: srv.Close}
}

func (r *Registry) Close() { r.close() }

// PushSkeletonBase pushes the built-in skeleton base for platforms and
// returns its digest reference, so that every tool builds on the very same
// base pulled over the registry protocol.
func (r *Registry) PushSkeletonBase(platforms []catalog.Platform, epoch time.Time) (string, error) {
	base, err := build.SkeletonBase(platforms, "", epoch)
	if err != nil {
		return "", err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := base.Image(p)
		if err != nil {
			return "", err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	tag, err := name.NewTag(r.Host + "/bench/skeleton:base")
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		return "", err
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return tag.Context().Digest(d.String()).String(), nil
}

// CopyRepo copies what a build reads (images/, services/) to dir.
func CopyRepo(root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"images", "services"} {
		if _, err := Run(root, nil, nil, "cp", "-r", filepath.Join(root, d), filepath.Join(dir, d)); err != nil {
			return err
		}
	}
	return nil
}

// RepoRoot is the working directory, checked to be the repository's root.
func RepoRoot(target string) (string, error) {
	root, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "images")); err != nil {
		return "", fmt.Errorf("run from the repository root (make %s): %w", target, err)
	}
	return root, nil
}

// GoCache is the machine's Go build cache (the smoke runs share it).
func GoCache() (string, error) {
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// MiB formats a byte count.
func MiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
