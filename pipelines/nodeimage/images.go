package nodeimage

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
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
		tmp := path + ".tmp"
		f, err := os.Create(tmp)
		if err != nil {
			return nil, err
		}
		zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
		if err := writeRootTar(zw, root, tree{}, epoch); err != nil {
			f.Close()
			return nil, err
		}
		if err := zw.Close(); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
	}
	return tarball.LayerFromFile(path)
}

// assemble builds each component image for the host platform with the
// repository's own image code and writes them all as one docker-archive
// tarball, the format `ctr images import` reads.
func assemble(w io.Writer, images []componentImage, netLayer v1.Layer, epoch time.Time) error {
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
		var img v1.Image
		switch c.Base {
		case "skeleton":
			img = skelImg
		case "net":
			if img, err = mutate.AppendLayers(empty.Image, netLayer); err != nil {
				return err
			}
		default:
			img = empty.Image
		}
		layer, err := treeLayer(c.Files, epoch)
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = platform.OS, platform.Arch
		cf.Created = v1.Time{Time: epoch}
		cf.Config.Env = []string{fullPath}
		cf.Config.Entrypoint = c.Entrypoint
		cf.Config.User = c.User
		cf.Config.WorkingDir = "/"
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return err
		}
		ref, err := name.ParseReference(c.Ref)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	return tarball.MultiRefWrite(refs, w)
}

// BinaryLayer is a layer holding one executable file, src on the host, at
// dst in the image (e.g. "usr/local/bin/netprobe"), with fixed times.
func BinaryLayer(dst, src string) (v1.Layer, error) {
	return treeLayer(tree{dst: {Mode: 0o755, Src: src}}, time.Unix(0, 0).UTC())
}
