// Package imagetest builds the repository's service images for the
// supply-chain stages' tests: on a Debian-like base (the skeleton plus
// Debian 12's os-release and dpkg records in distroless's status.d layout),
// so the OS-package paths of the SBOM and the scan are exercised too.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
)

// DebPackage is one dpkg record the test base carries.
type DebPackage struct{ Name, Version, Source, SourceVersion string }

// BasePackages are the dpkg records of the test base (as distroless's
// static-debian12 lists them, at versions chosen for the tests).
var BasePackages = []DebPackage{
	{Name: "base-files", Version: "12.4+deb12u5"},
	{Name: "netbase", Version: "6.4"},
	{Name: "tzdata", Version: "2024a-0+deb12u1"},
	{Name: "libssl3", Version: "3.0.11-1~deb12u2", Source: "openssl", SourceVersion: "3.0.11-1~deb12u2"},
}

const debianOSRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`

// Epoch is the tests' SOURCE_DATE_EPOCH.
var Epoch = time.Unix(1767225600, 0).UTC()

// DebianBase writes the test base as an OCI layout under dir and returns
// it resolved for the platforms.
func DebianBase(t testing.TB, dir string, platforms []catalog.Platform) *build.Base {
	t.Helper()
	skeleton, err := build.SkeletonBase(platforms, "", Epoch)
	if err != nil {
		t.Fatal(err)
	}
	layer := debLayer(t)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := skeleton.Image(p)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	path := filepath.Join(dir, "debian-like-base")
	lp, err := layout.Write(path, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	base, err := build.ResolveBase(context.Background(), build.BaseOptions{Value: "oci-layout:" + path, Platforms: platforms})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func debLayer(t testing.TB) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body string) {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: Epoch, Typeflag: tar.TypeReg}
		if body == "" && name[len(name)-1] == '/' {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add("etc/", "")
	add("etc/os-release", debianOSRelease)
	add("var/", "")
	add("var/lib/", "")
	add("var/lib/dpkg/", "")
	add("var/lib/dpkg/status.d/", "")
	for _, p := range BasePackages {
		stanza := "Package: " + p.Name + "\nVersion: " + p.Version + "\nArchitecture: all\nMaintainer: Debian\n"
		if p.Source != "" {
			stanza += "Source: " + p.Source + " (" + p.SourceVersion + ")\n"
		}
		add("var/lib/dpkg/status.d/"+p.Name, stanza+"Description: test record\n")
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return layer
}

// Build builds services (all when nil) from the repository at root for the
// platforms on base.
func Build(t testing.TB, root string, services []string, platforms []catalog.Platform, base *build.Base) []*build.Image {
	t.Helper()
	return BuildVersion(t, root, services, platforms, base, "0.0.0-test")
}

// BuildVersion is Build stamped with version (a release's tag).
func BuildVersion(t testing.TB, root string, services []string, platforms []catalog.Platform, base *build.Base, version string) []*build.Image {
	t.Helper()
	cat, err := catalog.Load(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	specs, err := cat.Select(services)
	if err != nil {
		t.Fatal(err)
	}
	res, err := build.Run(context.Background(), build.Options{Root: root, Specs: specs, Platforms: platforms, Base: base,
		Epoch: Epoch, Version: version, Revision: "test", WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res.Images
}
