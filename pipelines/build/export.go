package build

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// ExportOptions choose one image of a finished build to export.
type ExportOptions struct {
	Out      string // the build's output directory (its manifest.json and OCI layout)
	Service  string
	Platform string // "" keeps every platform (the multi-platform index)
	RefName  string // the layout's ref name annotation ("" = the image's tag); a full reference names the image in containerd
}

// ExportTar writes one service's image from a finished build as a tarball
// of an OCI layout holding only that image (the form `docker load`, crane
// and Dagger's Container.import read): the index, or with a platform that
// platform's image. The entry is annotated with the image's tag.
func ExportTar(o ExportOptions, w io.Writer) error {
	m, err := ReadManifest(filepath.Join(o.Out, ManifestFile))
	if err != nil {
		return err
	}
	var rec *Image
	var services []string
	for _, img := range m.Images {
		services = append(services, img.Service)
		if img.Service == o.Service {
			rec = img
		}
	}
	if rec == nil {
		return fmt.Errorf("--service %q is not in %s (it has %s)", o.Service, filepath.Join(o.Out, ManifestFile), strings.Join(services, ", "))
	}
	src, err := layout.FromPath(filepath.Join(o.Out, m.Layout))
	if err != nil {
		return err
	}
	idx, _, err := indexInLayout(src, rec.Digest)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", rec.Service, filepath.Join(o.Out, m.Layout), err)
	}
	tmp, err := os.MkdirTemp("", "export-"+rec.Service+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	refName := rec.Tag
	if o.RefName != "" {
		refName = o.RefName
	}
	tag := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName})
	if o.Platform == "" {
		err = dst.AppendIndex(idx, tag)
	} else {
		err = appendPlatform(dst, idx, rec, o.Platform, tag)
	}
	if err != nil {
		return err
	}
	return tarDir(tmp, w)
}

func appendPlatform(dst layout.Path, idx v1.ImageIndex, rec *Image, platform string, tag layout.Option) error {
	var have []string
	for _, pi := range rec.Platforms {
		have = append(have, pi.Platform.String())
		if pi.Platform.String() != platform {
			continue
		}
		h, err := v1.NewHash(pi.Digest)
		if err != nil {
			return err
		}
		img, err := idx.Image(h)
		if err != nil {
			return err
		}
		return dst.AppendImage(img, tag, layout.WithPlatform(v1.Platform{OS: pi.Platform.OS, Architecture: pi.Platform.Arch}))
	}
	return fmt.Errorf("--platform %q: %s was built for %s", platform, rec.Service, strings.Join(have, ", "))
}

// tarDir writes dir's files to w in name order with fixed metadata, so the
// same layout always makes the same tarball.
func tarDir(dir string, w io.Writer) error {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	slices.Sort(files)
	tw := tar.NewWriter(w)
	for _, path := range files {
		rel, _ := filepath.Rel(dir, path)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		info, err := f.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: info.Size(), Typeflag: tar.TypeReg, Format: tar.FormatPAX})
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
