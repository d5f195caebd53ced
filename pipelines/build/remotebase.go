package build

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DefaultCacheDir is where fetched base images are kept (an OCI layout), so
// a pinned base is downloaded once and later builds need no registry.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "darktower", "bases")
}

// remoteBase resolves a registry reference: from the cache when ref is a
// digest already there, else from the registry (then cached).
func remoteBase(ctx context.Context, label string, ref name.Reference, platforms []catalog.Platform, kc authn.Keychain, cacheDir string) (*Base, error) {
	if d, pinned := ref.(name.Digest); pinned && cacheDir != "" {
		if b, err := cachedBase(cacheDir, label, d, platforms); err == nil {
			return b, nil
		}
	}
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	idx, err := remote.Index(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return nil, fmt.Errorf("base %s cannot be resolved (%s): %w\n"+
			"Offline or no access to that registry? Build with --base skeleton (built in, no network) "+
			"or --base oci-layout:PATH (e.g. made where the registry is reachable with `crane pull --format=oci %s PATH`)",
			label, ref, err, ref)
	}
	digest, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	b := &Base{Name: label, Digest: digest, images: map[catalog.Platform]v1.Image{}}
	if err := b.pick(idx, platforms); err != nil {
		return nil, err
	}
	if cacheDir != "" {
		if err := b.store(cacheDir, idx); err != nil {
			return nil, fmt.Errorf("caching base %s in %s: %w", label, cacheDir, err)
		}
	}
	return b, nil
}

func openCache(dir string) (layout.Path, error) {
	if p, err := layout.FromPath(dir); err == nil {
		return p, nil
	}
	return layout.Write(dir, empty.Index)
}

// store writes the index manifest and the picked platforms' images (not
// every platform the index lists) to the cache layout.
func (b *Base) store(dir string, idx v1.ImageIndex) error {
	p, err := openCache(dir)
	if err != nil {
		return err
	}
	for _, img := range b.images {
		if err := p.WriteImage(img); err != nil {
			return err
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return err
	}
	if err := p.WriteBlob(b.Digest, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return err
	}
	if err := p.RemoveDescriptors(match.Digests(b.Digest)); err != nil {
		return err
	}
	return p.AppendDescriptor(v1.Descriptor{MediaType: mt, Digest: b.Digest, Size: int64(len(raw)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": b.Name}})
}

// cachedBase reads a pinned base from the cache; any missing piece is an
// error (and the caller fetches it instead).
func cachedBase(dir, label string, d name.Digest, platforms []catalog.Platform) (*Base, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, h, err := indexInLayout(p, d.DigestStr())
	if err != nil {
		return nil, err
	}
	b := &Base{Name: label, Digest: h, images: map[catalog.Platform]v1.Image{}}
	if err := b.pick(idx, platforms); err != nil {
		return nil, err
	}
	for _, img := range b.images {
		layers, err := img.Layers()
		if err != nil {
			return nil, err
		}
		for _, l := range layers {
			ld, err := l.Digest()
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(filepath.Join(dir, "blobs", ld.Algorithm, ld.Hex)); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}
