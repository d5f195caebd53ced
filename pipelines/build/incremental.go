package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/darktower/delivery/pipelines/catalog"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Previous is what the last build left in the output directory: its
// manifest and OCI layout. A service whose build key is unchanged (same
// binaries, base, spec, stamps and pipeline) is taken from there instead of
// being assembled again.
type Previous struct {
	images map[string]*Image
	layout layout.Path
}

// ReadPrevious reads out's last build. Anything missing or unreadable just
// means nothing is reused; it never fails a build.
func ReadPrevious(out string) *Previous {
	m, err := ReadManifest(filepath.Join(out, ManifestFile))
	if err != nil {
		return nil
	}
	p, err := layout.FromPath(filepath.Join(out, LayoutDir))
	if err != nil {
		return nil
	}
	prev := &Previous{images: map[string]*Image{}, layout: p}
	for _, img := range m.Images {
		if img.BuildKey != "" {
			prev.images[img.Service] = img
		}
	}
	return prev
}

// reuse returns the previous build of service when its key matches and its
// index and platform images are all still in the layout.
func (p *Previous) reuse(service, key string) *Image {
	if p == nil {
		return nil
	}
	old, ok := p.images[service]
	if !ok || old.BuildKey != key {
		return nil
	}
	img, err := fromLayout(p.layout, old)
	if err != nil {
		return nil
	}
	return img
}

// fromLayout rebinds an Image record to the index and images stored in a
// layout (checking the index's digest on the way).
func fromLayout(p layout.Path, rec *Image) (*Image, error) {
	idx, h, err := indexInLayout(p, rec.Digest)
	if err != nil {
		return nil, err
	}
	if d, err := idx.Digest(); err != nil || d != h {
		return nil, fmt.Errorf("%s: index %s does not match its digest", rec.Service, rec.Digest)
	}
	img := *rec
	img.Index, img.Pushed, img.Loaded = idx, "", ""
	img.Platforms = append([]PlatformImage(nil), rec.Platforms...)
	for i, pi := range img.Platforms {
		ph, err := v1.NewHash(pi.Digest)
		if err != nil {
			return nil, err
		}
		if img.Platforms[i].image, err = idx.Image(ph); err != nil {
			return nil, err
		}
	}
	return &img, nil
}

// buildKey hashes everything an image's bytes depend on: the binaries, the
// base, the spec, the stamps, and the pipeline executable itself (so a
// change to how images are assembled rebuilds them).
func buildKey(o Options, s *catalog.Spec, bins map[binKey]string) (string, error) {
	h := sha256.New()
	self, err := PipelineDigest()
	if err != nil {
		return "", err
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "pipeline %s\nspec %s\nbase %s %s\nepoch %d\nversion %s\nrevision %s\nsource %s\n",
		self, spec, o.Base.Name, o.Base.Digest, o.Epoch.Unix(), o.Version, o.Revision, o.Source)
	for _, p := range o.platformsFor(s) {
		d, err := fileDigest(bins[binKey{s.Name, p}])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "binary %s %s\n", p, d)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// PipelineDigest is the SHA-256 of the running pipeline executable: what
// the stages' reuse keys hold for "how the outputs are made" (the
// pipeline's own code and every library it links, syft's included).
var PipelineDigest = sync.OnceValues(func() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return fileDigest(exe)
})

// indexInLayout finds the image index with the given digest in a layout.
func indexInLayout(p layout.Path, digest string) (v1.ImageIndex, v1.Hash, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, h, err
	}
	root, err := p.ImageIndex()
	if err != nil {
		return nil, h, err
	}
	idx, err := root.ImageIndex(h)
	return idx, h, err
}
