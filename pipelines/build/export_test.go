package build

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/catalog"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// twoPlatformBuild writes a finished build of two services, each an index
// of a linux/amd64 and a linux/arm64 image, and returns its result.
func twoPlatformBuild(t *testing.T, out string) *Result {
	t.Helper()
	res := &Result{}
	for _, service := range []string{"ac-service", "media-handler"} {
		img := &Image{Service: service, Tag: service + ":1.2.3"}
		var idx v1.ImageIndex = empty.Index
		for _, p := range []catalog.Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}} {
			pi, err := random.Image(64, 1)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := pi.Digest()
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: pi,
				Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
			img.Platforms = append(img.Platforms, PlatformImage{Platform: p, Digest: d.String(), image: pi})
		}
		d, _ := idx.Digest()
		img.Digest, img.Index = d.String(), idx
		res.Images = append(res.Images, img)
	}
	if _, err := WriteOutputs(out, res, "1.2.3", "abc", time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	return res
}

// untarLayout unpacks an exported tarball and opens it as an OCI layout.
func untarLayout(t *testing.T, data []byte) v1.ImageIndex {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("exported tarball is not an OCI layout: %v", err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestExportTarWritesOneServicesImageAsAnOCILayout(t *testing.T) {
	out := t.TempDir()
	res := twoPlatformBuild(t, out)
	want := res.Images[1]

	var whole bytes.Buffer
	if err := ExportTar(ExportOptions{Out: out, Service: "media-handler"}, &whole); err != nil {
		t.Fatal(err)
	}
	root := untarLayout(t, whole.Bytes())
	im, _ := root.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != want.Digest {
		t.Fatalf("whole export: entries %+v, want only media-handler's index %s", im.Manifests, want.Digest)
	}
	if got := im.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "media-handler:1.2.3" {
		t.Errorf("ref.name annotation = %q, want media-handler:1.2.3", got)
	}
	idx, err := root.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	for _, pi := range want.Platforms {
		h, _ := v1.NewHash(pi.Digest)
		img, err := idx.Image(h)
		if err != nil {
			t.Fatalf("%s missing from the export: %v", pi.Platform, err)
		}
		if layers, err := img.Layers(); err != nil || len(layers) != 1 {
			t.Fatalf("%s: layers %d, %v", pi.Platform, len(layers), err)
		}
		if _, err := img.ConfigFile(); err != nil {
			t.Fatal(err)
		}
	}

	var one bytes.Buffer
	if err := ExportTar(ExportOptions{Out: out, Service: "media-handler", Platform: "linux/arm64"}, &one); err != nil {
		t.Fatal(err)
	}
	im, _ = untarLayout(t, one.Bytes()).IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != want.Platforms[1].Digest ||
		im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != "arm64" {
		t.Fatalf("linux/arm64 export: entries %+v, want the arm64 image %s", im.Manifests, want.Platforms[1].Digest)
	}

	var again bytes.Buffer
	if err := ExportTar(ExportOptions{Out: out, Service: "media-handler", Platform: "linux/arm64"}, &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), again.Bytes()) {
		t.Error("two exports of the same image differ; the tarball should be reproducible")
	}
}

func TestExportTarNamesWhatIsMissing(t *testing.T) {
	out := t.TempDir()
	twoPlatformBuild(t, out)
	for _, c := range []struct {
		o    ExportOptions
		want []string
	}{
		{ExportOptions{Out: out, Service: "nope"}, []string{`--service "nope"`, "ac-service, media-handler"}},
		{ExportOptions{Out: out, Service: "ac-service", Platform: "linux/s390x"}, []string{`--platform "linux/s390x"`, "linux/amd64, linux/arm64"}},
		{ExportOptions{Out: t.TempDir(), Service: "ac-service"}, []string{"run build-all first"}},
	} {
		err := ExportTar(c.o, io.Discard)
		if err == nil {
			t.Errorf("%+v: exported, want an error", c.o)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not say %q", c.o, err, w)
			}
		}
	}
}
