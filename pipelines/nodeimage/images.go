package nodeimage

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// componentImage is one image preloaded into the node's containerd.
type componentImage struct {
	Ref        string   // the name kubeadm, kind's manifests or ours refer to
	Base       string   // "skeleton", "net" or "scratch"
	Files      tree     // added on top of the base
	Entrypoint []string // nil: the pod spec gives the command
	User       string
}

const fullPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// treeLayer makes an uncompressed layer from overlay entries only.
func treeLayer(t tree, epoch time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := writeRootTar(&buf, "", t, epoch); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
}

// rootLayer makes a layer of a whole debootstrapped root, kept gzipped in
// a file next to it (made once per root): loading it again then costs no
// compression.
func rootLayer(root string, epoch time.Time) (v1.Layer, error) {
	path := root + ".layer.tar.gz"
	if _, err := os.Stat(path); err != nil {
		// Its own temporary file: two processes may make it at once; the
		// rename makes either one's complete file the layer.
		f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
		err = writeRootTar(zw, root, tree{}, epoch)
		if err == nil {
			err = zw.Close()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			return nil, err
		}
	}
	return tarball.LayerFromFile(path)
}

// assemble builds each component image for the host platform with the
// repository's own image code and writes them all as one docker-archive
// tarball, the format `ctr images import` reads.
func assemble(w io.Writer, images []componentImage, netLayer v1.Layer, epoch time.Time, extra map[string]v1.Image) error {
	platform := catalog.Platform{OS: "linux", Arch: runtime.GOARCH}
	skeleton, err := build.SkeletonBase([]catalog.Platform{platform}, "", epoch)
	if err != nil {
		return err
	}
	skelImg, err := skeleton.Image(platform)
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for _, c := range images {
		img, err := c.image(skelImg, netLayer, platform, epoch)
		if err != nil {
			return err
		}
		ref, err := name.ParseReference(c.Ref)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	for r, img := range extra {
		ref, err := name.ParseReference(r)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	return tarball.MultiRefWrite(refs, w)
}

// image builds one component image on its base.
func (c componentImage) image(skeleton v1.Image, netLayer v1.Layer, platform catalog.Platform, epoch time.Time) (v1.Image, error) {
	var img v1.Image
	var err error
	switch c.Base {
	case "skeleton":
		img = skeleton
	case "net":
		if img, err = mutate.AppendLayers(empty.Image, netLayer); err != nil {
			return nil, err
		}
	default:
		img = empty.Image
	}
	layer, err := treeLayer(c.Files, epoch)
	if err != nil {
		return nil, err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = platform.OS, platform.Arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = []string{fullPath}
	cf.Config.Entrypoint = c.Entrypoint
	cf.Config.User = c.User
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// ToolImage is a one-binary image for the host platform on the skeleton
// base: src on the host at dst in the image, run as entrypoint by user
// (e.g. the real cluster tests' probe).
func ToolImage(dst, src string, entrypoint []string, user string) (v1.Image, error) {
	platform := catalog.Platform{OS: "linux", Arch: runtime.GOARCH}
	epoch := time.Unix(0, 0).UTC()
	skeleton, err := build.SkeletonBase([]catalog.Platform{platform}, "", epoch)
	if err != nil {
		return nil, err
	}
	skelImg, err := skeleton.Image(platform)
	if err != nil {
		return nil, err
	}
	c := componentImage{Base: "skeleton", Entrypoint: entrypoint, User: user, Files: tree{dst: {Mode: 0o755, Src: src}}}
	return c.image(skelImg, nil, platform, epoch)
}
