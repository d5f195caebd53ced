// Package dockerload is build-all's --load step: it hands the images built
// for the Docker host's platform to a local Docker engine, through the
// docker CLI (so DOCKER_HOST and Docker contexts apply as usual). The
// stream is a `docker save` tarball, which every engine version accepts.
package dockerload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// HostPlatform is the platform whose images --load hands to Docker.
func HostPlatform() catalog.Platform { return catalog.Platform{OS: "linux", Arch: runtime.GOARCH} }

// Loaded is one image now in the engine.
type Loaded struct {
	Service string
	Ref     string // service:version, as `docker run` takes it
	ImageID string // the engine's image ID: the config digest
}

// Preflight checks, before anything is built, that the host platform is
// among those to build, the docker CLI is on PATH and an engine answers it,
// so --load fails in a second, not after the build.
func Preflight(ctx context.Context, platforms []catalog.Platform) error {
	if host := HostPlatform(); !slices.Contains(platforms, host) {
		return fmt.Errorf("--load: the Docker host's platform %s is not being built (include %s in --platforms)", host, host)
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		return fmt.Errorf("--load needs the docker CLI on PATH: %w (install Docker, or drop --load)", err)
	}
	out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("--load: no Docker engine answers (is it running, and DOCKER_HOST right?): %s", strings.TrimSpace(string(out)))
	}
	return nil
}

// Load loads each image's p variant into the engine under its tag
// (service:version). Nothing is loaded when any image lacks p.
func Load(ctx context.Context, images []*build.Image, p catalog.Platform, progress io.Writer) ([]Loaded, error) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return nil, fmt.Errorf("--load needs the docker CLI on PATH: %w (install Docker, or drop --load)", err)
	}
	refs := map[name.Reference]v1.Image{}
	var loaded []Loaded
	for _, img := range images {
		pimg, err := img.ImageFor(p)
		if err != nil {
			return nil, fmt.Errorf("--load: %w (include %s in --platforms)", err, p)
		}
		tag, err := name.NewTag(img.Tag)
		if err != nil {
			return nil, err
		}
		id, err := pimg.ConfigName()
		if err != nil {
			return nil, err
		}
		refs[tag] = pimg
		loaded = append(loaded, Loaded{Service: img.Service, Ref: img.Tag, ImageID: id.String()})
	}
	start := time.Now()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.MultiRefWrite(refs, pw)) }()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, docker, "load")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, &stdout, &stderr
	err = cmd.Run()
	pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if docker exited early
	if err != nil {
		return nil, fmt.Errorf("docker load: %v: %s (is the Docker engine running and DOCKER_HOST right?)", err, strings.TrimSpace(stderr.String()))
	}
	if progress != nil {
		for _, l := range loaded {
			fmt.Fprintf(progress, "load: %-20s %s (%s, image ID %.19s) into Docker\n", l.Service, l.Ref, p, l.ImageID)
		}
		fmt.Fprintf(progress, "load: %d image(s) in %s\n", len(loaded), time.Since(start).Round(time.Millisecond))
	}
	return loaded, nil
}
