package sbom

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"github.com/darktower/delivery/pipelines/internal/stagecache"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/format"
	syftcdx "github.com/anchore/syft/syft/format/cyclonedxjson"
	syftspdx "github.com/anchore/syft/syft/format/spdxjson"
	syftsbom "github.com/anchore/syft/syft/sbom"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	spdxjson "github.com/spdx/tools-golang/json"

	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/internal/imagetest"
)

// binaryInfo reads the Go build info of the service binary inside img.
func binaryInfo(t *testing.T, img v1.Image, service string) *buildinfo.BuildInfo {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("no /usr/local/bin/%s in the image", service)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "usr/local/bin/"+service {
			path := filepath.Join(t.TempDir(), service)
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
			info, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return info
		}
	}
}

// The SBOMs of every service parse as SPDX 2.3 and CycloneDX 1.6 with their
// own libraries and list exactly the modules (at the versions) the binary
// was linked with, the Go version, and the base's Debian packages.
func TestSBOMsListTheBinariesModulesAndTheBasePackages(t *testing.T) {
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	base := imagetest.DebianBase(t, t.TempDir(), amd64)
	images := imagetest.Build(t, "../..", nil, amd64, base)
	out := t.TempDir()
	res, err := Generate(context.Background(), Options{Images: images, Out: out, Created: imagetest.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Documents) != len(images) {
		t.Fatalf("%d documents for %d images", len(res.Documents), len(images))
	}
	t.Logf("FIGURE sbom for %d images in %s", len(images), res.Took)
	for i, doc := range res.Documents {
		im := images[i]
		img, err := im.Index.Image(mustHash(doc.ImageDigest))
		if err != nil {
			t.Fatal(err)
		}
		info := binaryInfo(t, img, im.Service)
		want := map[string]string{"stdlib": strings.TrimPrefix(info.GoVersion, "go")}
		for _, d := range info.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			want[d.Path] = d.Version
		}
		for _, p := range imagetest.BasePackages {
			want[p.Name] = p.Version
		}
		checkSPDX(t, filepath.Join(out, doc.SPDX), want)
		checkCycloneDX(t, filepath.Join(out, doc.CycloneDX), want)
		if doc.OS == nil || doc.OS.ID != "debian" || doc.OS.VersionID != "12" {
			t.Errorf("%s: OS %+v, want debian 12", im.Service, doc.OS)
		}
		var openssl bool
		for _, p := range doc.Packages {
			if p.Name == "libssl3" {
				openssl = p.SourceName == "openssl" && p.SourceVersion == "3.0.11-1~deb12u2"
			}
		}
		if !openssl {
			t.Errorf("%s: libssl3's source package (openssl 3.0.11-1~deb12u2) not recorded", im.Service)
		}
		t.Logf("%s: %d packages (%d Go modules in the binary)", im.Service, doc.PackageCount, len(info.Deps))
	}
}

// versionOf compares the way each format writes Go versions (syft writes
// stdlib as "go1.x.y"; modules with their v prefix).
func versionMatches(got, want string) bool {
	return got == want || strings.TrimPrefix(got, "go") == want
}

func checkSPDX(t *testing.T, path string, want map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := spdxjson.Read(f)
	if err != nil {
		t.Fatalf("%s does not parse as SPDX: %v", path, err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Errorf("%s: %s, want SPDX-2.3", path, doc.SPDXVersion)
	}
	got := map[string]string{}
	for _, p := range doc.Packages {
		got[p.PackageName] = p.PackageVersion
	}
	compare(t, path, got, want)
}

func checkCycloneDX(t *testing.T, path string, want map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("%s does not parse as CycloneDX: %v", path, err)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 {
		t.Errorf("%s: spec version %s, want 1.6", path, bom.SpecVersion)
	}
	got := map[string]string{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			got[c.Name] = c.Version
		}
	}
	compare(t, path, got, want)
}

func compare(t *testing.T, path string, got, want map[string]string) {
	t.Helper()
	for name, v := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: %s missing", filepath.Base(path), name)
		} else if !versionMatches(g, v) {
			t.Errorf("%s: %s at %s, the binary has %s", filepath.Base(path), name, g, v)
		}
	}
}

// The documents are what syft's own encoders write, but for the fields
// set here (identifiers and times), which are what the build determines
// rather than chance or the clock; Generate (one license scanner for all
// images) writes exactly those bytes.
func TestDocumentsAreSyftsButForIdentifiersAndTimes(t *testing.T) {
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	images := imagetest.Build(t, "../..", []string{"media-handler"}, amd64, imagetest.DebianBase(t, t.TempDir(), amd64))
	im, p := images[0], images[0].Platforms[0]
	img, err := im.Index.Image(mustHash(p.Digest))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Images: images, Out: t.TempDir(), Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SourceURL: "https://example.com/darktower"}
	if _, err := Generate(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	w := o.writer(im, p)
	s, err := Catalog(context.Background(), w.ref, &v1.Platform{OS: "linux", Architecture: "amd64"}, img)
	if err != nil {
		t.Fatal(err)
	}
	spdxEnc, err := syftspdx.NewFormatEncoderWithConfig(syftspdx.EncoderConfig{Version: SPDXVersion, Pretty: true})
	if err != nil {
		t.Fatal(err)
	}
	cdxEnc, err := syftcdx.NewFormatEncoderWithConfig(syftcdx.EncoderConfig{Version: CycloneDXVersion, Pretty: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		format string
		suffix string
		ours   func(syftsbom.SBOM) ([]byte, error)
		syft   syftsbom.FormatEncoder
		fields map[string]string // path (dot-separated) → value wanted in ours
	}{
		{"SPDX", ".spdx.json", w.encodeSPDX, spdxEnc, map[string]string{
			"documentNamespace":    "https://example.com/darktower/sbom/media-handler_linux_amd64-" + w.id(s.Descriptor, "spdx-2.3").String(),
			"creationInfo.created": "2026-01-02T03:04:05Z"}},
		{"CycloneDX", ".cdx.json", w.encodeCycloneDX, cdxEnc, map[string]string{
			"serialNumber":       "urn:uuid:" + w.id(s.Descriptor, "cyclonedx-1.6").String(),
			"metadata.timestamp": "2026-01-02T03:04:05Z"}},
	} {
		raw, err := c.ours(*s)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := format.Encode(*s, c.syft)
		if err != nil {
			t.Fatal(err)
		}
		var a, b map[string]any
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(theirs, &b); err != nil {
			t.Fatal(err)
		}
		for path, want := range c.fields {
			keys := strings.Split(path, ".")
			ma, mb := a, b
			for _, k := range keys[:len(keys)-1] {
				ma, mb = ma[k].(map[string]any), mb[k].(map[string]any)
			}
			last := keys[len(keys)-1]
			if ma[last] != want {
				t.Errorf("%s %s = %v, want %s", c.format, path, ma[last], want)
			}
			if mb[last] == want {
				t.Errorf("%s %s: syft's own encoder already writes %v", c.format, path, want)
			}
			mb[last] = ma[last]
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: the document differs from syft's in more than %v", c.format, slices.Collect(maps.Keys(c.fields)))
		}
		if again, err := c.ours(*s); err != nil || !bytes.Equal(again, raw) {
			t.Errorf("%s: encoding the same SBOM twice gave different bytes (%v)", c.format, err)
		}
		if !bytes.Equal(readFile(t, filepath.Join(o.Out, Dir, w.base+c.suffix)), raw) {
			t.Errorf("%s: Generate wrote other bytes than Catalog and the encoder give", c.format)
		}
	}
}

// An image whose documents are in the cache is not cataloged again: the
// cached documents are the same bytes a cataloging writes, with the same
// inventory; a damaged entry is cataloged again and replaced.
func TestCachedDocumentsAreReusedByImageDigest(t *testing.T) {
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	images := imagetest.Build(t, "../..", []string{"media-handler"}, amd64, imagetest.DebianBase(t, t.TempDir(), amd64))
	cache := t.TempDir()
	run := func(cacheDir string) (*Result, string, string) {
		t.Helper()
		var progress bytes.Buffer
		out := t.TempDir()
		res, err := Generate(context.Background(), Options{Images: images, Out: out, Created: imagetest.Epoch,
			SourceURL: "https://example.com/darktower", CacheDir: cacheDir, Progress: &progress})
		if err != nil {
			t.Fatal(err)
		}
		return res, out, progress.String()
	}
	first, out1, _ := run(cache)
	if first.Reused != 0 {
		t.Fatalf("an empty cache gave %d document pairs", first.Reused)
	}
	second, out2, progress := run(cache)
	digest := images[0].Platforms[0].Digest
	if second.Reused != 1 || !strings.Contains(progress, "sbom: reused for media-handler linux/amd64 (digest "+digest+")") {
		t.Fatalf("second run reused %d, said:\n%s", second.Reused, progress)
	}
	fresh, out3, _ := run("")
	for _, r := range []*Result{second, fresh} {
		if !reflect.DeepEqual(r.Documents, first.Documents) {
			t.Errorf("documents %+v, first run's %+v", r.Documents[0], first.Documents[0])
		}
	}
	if len(first.Documents[0].Packages) == 0 || first.Documents[0].OS == nil {
		t.Fatalf("no inventory: %+v", first.Documents[0])
	}
	for _, name := range []string{first.Documents[0].SPDX, first.Documents[0].CycloneDX} {
		a := readFile(t, filepath.Join(out1, name))
		if !bytes.Equal(a, readFile(t, filepath.Join(out2, name))) || !bytes.Equal(a, readFile(t, filepath.Join(out3, name))) {
			t.Errorf("%s: the cached document is not what cataloging writes", name)
		}
	}

	entries, err := filepath.Glob(filepath.Join(cache, "*", cacheCycloneDX))
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache holds %v (%v), want one entry", entries, err)
	}
	if err := os.WriteFile(entries[0], []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	damaged, out4, progress := run(cache)
	if damaged.Reused != 0 || !strings.Contains(progress, "unusable, cataloging again") {
		t.Fatalf("a damaged entry: reused %d, said:\n%s", damaged.Reused, progress)
	}
	if !bytes.Equal(readFile(t, filepath.Join(out1, first.Documents[0].CycloneDX)), readFile(t, filepath.Join(out4, first.Documents[0].CycloneDX))) {
		t.Error("the damaged entry's content was written")
	}
	if again, _, _ := run(cache); again.Reused != 1 {
		t.Error("the damaged entry was not replaced")
	}
}

// Pruning removes entries unused for cacheMaxAge and abandoned partial
// ones, and nothing that is not an entry.
func TestPruneRemovesOnlyOldEntries(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-cacheMaxAge - time.Hour)
	mk := func(name string, mtime time.Time) string {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, cacheRecord), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(path, cacheRecord), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return path
	}
	stale, recent := mk(strings.Repeat("a", 64), old), mk(strings.Repeat("b", 64), time.Now())
	partial, foreign := mk(".new-123", old), mk("not-an-entry", old)
	if err := stagecache.PruneEntries(dir, cacheRecord, time.Now().Add(-cacheMaxAge)); err != nil {
		t.Fatal(err)
	}
	for path, kept := range map[string]bool{stale: false, partial: false, recent: true, foreign: true} {
		if _, err := os.Stat(path); (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", filepath.Base(path), err == nil, kept)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Running only Catalogers loses nothing: every service's documents, on a
// base with Debian packages, are the same bytes as with syft's default
// cataloger set for images.
func TestCatalogersFindWhatSyftsDefaultSetFinds(t *testing.T) {
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	images := imagetest.Build(t, "../..", nil, amd64, imagetest.DebianBase(t, t.TempDir(), amd64))
	platform := &v1.Platform{OS: "linux", Architecture: "amd64"}
	for _, im := range images {
		p := im.Platforms[0]
		img, err := im.Index.Image(mustHash(p.Digest))
		if err != nil {
			t.Fatal(err)
		}
		w := Options{Created: imagetest.Epoch, SourceURL: "https://example.com/darktower"}.writer(im, p)
		start := time.Now()
		ours, err := Catalog(context.Background(), w.ref, platform, img)
		if err != nil {
			t.Fatal(err)
		}
		tookOurs := time.Since(start)
		start = time.Now()
		all, err := catalogWith(context.Background(), w.ref, platform, img, syft.DefaultCreateSBOMConfig().WithTool(toolName, toolVersion()))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s with %v, %s with syft's default set", im.Service, tookOurs, Catalogers, time.Since(start))
		for _, enc := range []func(syftsbom.SBOM) ([]byte, error){w.encodeSPDX, w.encodeCycloneDX} {
			a, err := enc(*ours)
			if err != nil {
				t.Fatal(err)
			}
			b, err := enc(*all)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s: a document differs from syft's default cataloger set's (%d vs %d bytes)", im.Service, len(a), len(b))
			}
		}
		if len(ours.Artifacts.Packages.Sorted()) < 10 {
			t.Errorf("%s: only %d packages", im.Service, len(ours.Artifacts.Packages.Sorted()))
		}
	}
}
