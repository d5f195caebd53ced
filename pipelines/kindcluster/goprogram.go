package kindcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// GoProgram is a command of this repository (a checks tool, not a service)
// that runs as a pod: built for the nodes' platform and loaded straight
// into them, the way the build's images are.
type GoProgram struct {
	ModuleDir string // where `go build` runs (a module of the repository)
	Package   string // e.g. ./cmd/darktower-smoke
	Name      string // the binary's and the image repository's name
}

// LoadGoProgram builds p statically, puts it on the skeleton base as
// /usr/local/bin/<name> (run as 65532) and loads it into every node. The
// image is tagged by the binary's hash, so an unchanged program is found
// in the nodes and not loaded again. It returns the image reference.
func (c *Cluster) LoadGoProgram(ctx context.Context, p GoProgram) (string, error) {
	dir, err := os.MkdirTemp("", p.Name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, p.Name)
	// Stripped: a pod never needs the symbols, and Traefik's binary is a
	// quarter of a gigabyte with them.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, p.Package)
	cmd.Dir = p.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s (%s in %s): %v\n%s", p.Name, p.Package, p.ModuleDir, err, out)
	}
	f, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", err
	}
	ref := "darktower.local/" + p.Name + ":" + hex.EncodeToString(h.Sum(nil))[:12]
	if c.HasImage(ref) {
		return ref, nil
	}
	img, err := nodeimage.ToolImage("usr/local/bin/"+p.Name, bin, []string{"/usr/local/bin/" + p.Name}, "65532:65532")
	if err != nil {
		return "", err
	}
	tag, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	if err := c.LoadArchive(Streamed(func(w io.Writer) error { return tarball.Write(tag, img, w) })); err != nil {
		return "", fmt.Errorf("loading %s: %w", p.Name, err)
	}
	return ref, nil
}
