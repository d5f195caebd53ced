// Package sbom is the pipeline's bill-of-materials stage: for every built
// image and platform, syft catalogs the image as it will run (the Go
// modules and Go version in the binary's build info, and the base image's
// OS packages from its dpkg metadata) and writes an SPDX 2.3 and a
// CycloneDX 1.6 JSON document. The package inventory is returned too: the
// scan stage checks exactly what the SBOM lists.
package sbom

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"time"

	stereofile "github.com/anchore/stereoscope/pkg/file"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/format"
	"github.com/anchore/syft/syft/format/cyclonedxjson"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/pkg"
	syftsbom "github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source/stereoscopesource"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	_ "modernc.org/sqlite" // syft's RPM cataloger reads newer rpmdbs through it (as syft's own CLI does)

	"github.com/darktower/delivery/pipelines/build"
)

// Formats and versions written for every image.
const (
	SPDXVersion      = "2.3"
	CycloneDXVersion = "1.6"
	Dir              = "sbom" // under the output directory
)

// Package is one inventoried component.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Type    string `json:"type"` // syft's package type: go-module, deb, …
	PURL    string `json:"purl,omitempty"`
	// Source package and version of a Debian package (what Debian's
	// security tracker, and so Trivy's DB, keys advisories by).
	SourceName    string `json:"sourceName,omitempty"`
	SourceVersion string `json:"sourceVersion,omitempty"`
}

// OS is the image's distribution, as its os-release says.
type OS struct {
	ID        string `json:"id"`
	VersionID string `json:"versionID"`
}

// Document is the SBOM of one image platform.
type Document struct {
	Service         string    `json:"service"`
	Platform        string    `json:"platform"`
	ImageDigest     string    `json:"imageDigest"`
	SPDX            string    `json:"spdx"` // path relative to the output directory
	SPDXDigest      string    `json:"spdxDigest"`
	CycloneDX       string    `json:"cyclonedx"`
	CycloneDXDigest string    `json:"cyclonedxDigest"`
	OS              *OS       `json:"os,omitempty"`
	Packages        []Package `json:"-"`
	PackageCount    int       `json:"packages"`
}

// Options are the stage's inputs.
type Options struct {
	Images   []*build.Image
	Out      string // the build's output directory; documents go to Out/sbom
	Progress io.Writer
}

// Result is the stage's output, in the order of the images and platforms.
type Result struct {
	Documents []*Document
	Took      time.Duration
}

// Generate writes the SBOMs. Any failure fails the stage: an image
// without a bill of materials is not releasable.
func Generate(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	dir := filepath.Join(o.Out, Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	res := &Result{}
	for _, im := range o.Images {
		for _, p := range im.Platforms {
			img, err := im.Index.Image(mustHash(p.Digest))
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			doc, err := document(ctx, dir, im, p, img)
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			res.Documents = append(res.Documents, doc)
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "sbom: %s %s: %d packages\n", im.Service, p.Platform, doc.PackageCount)
			}
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

func mustHash(digest string) v1.Hash {
	h, err := v1.NewHash(digest)
	if err != nil {
		// The build stage wrote it: a malformed digest is a bug there.
		panic(fmt.Sprintf("sbom: malformed image digest %q: %v", digest, err))
	}
	return h
}

// Catalog runs syft over one image.
func Catalog(ctx context.Context, ref string, platform *v1.Platform, img v1.Image) (*syftsbom.SBOM, error) {
	tmp := stereofile.NewTempDirGenerator("darktower-sbom")
	defer tmp.Cleanup()
	content, err := tmp.NewDirectory("content")
	if err != nil {
		return nil, err
	}
	simg := image.New(img, tmp, content)
	if err := simg.Read(ctx); err != nil {
		return nil, fmt.Errorf("reading the image: %w", err)
	}
	defer simg.Cleanup()
	src := stereoscopesource.New(simg, stereoscopesource.ImageConfig{
		Reference: ref,
		Platform:  &image.Platform{OS: platform.OS, Architecture: platform.Architecture},
	})
	cfg := syft.DefaultCreateSBOMConfig().WithTool("darktower", toolVersion())
	return syft.CreateSBOM(ctx, src, cfg)
}

func document(ctx context.Context, dir string, im *build.Image, p build.PlatformImage, img v1.Image) (*Document, error) {
	ref := im.Service + ":" + im.Tag + "@" + im.Digest
	s, err := Catalog(ctx, ref, &v1.Platform{OS: p.Platform.OS, Architecture: p.Platform.Arch}, img)
	if err != nil {
		return nil, err
	}
	doc := &Document{Service: im.Service, Platform: p.Platform.String(), ImageDigest: p.Digest, Packages: Packages(s)}
	doc.PackageCount = len(doc.Packages)
	if d := s.Artifacts.LinuxDistribution; d != nil && d.ID != "" {
		doc.OS = &OS{ID: d.ID, VersionID: d.VersionID}
	}
	base := fmt.Sprintf("%s_%s_%s", im.Service, p.Platform.OS, p.Platform.Arch)
	spdx, err := spdxjson.NewFormatEncoderWithConfig(spdxjson.EncoderConfig{Version: SPDXVersion, Pretty: true})
	if err != nil {
		return nil, err
	}
	cdx, err := cyclonedxjson.NewFormatEncoderWithConfig(cyclonedxjson.EncoderConfig{Version: CycloneDXVersion, Pretty: true})
	if err != nil {
		return nil, err
	}
	if doc.SPDX, doc.SPDXDigest, err = write(dir, base+".spdx.json", *s, spdx); err != nil {
		return nil, err
	}
	if doc.CycloneDX, doc.CycloneDXDigest, err = write(dir, base+".cdx.json", *s, cdx); err != nil {
		return nil, err
	}
	return doc, nil
}

func write(dir, name string, s syftsbom.SBOM, enc syftsbom.FormatEncoder) (rel, digest string, err error) {
	raw, err := format.Encode(s, enc)
	if err != nil {
		return "", "", fmt.Errorf("encoding %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(raw)
	return filepath.Join(Dir, name), "sha256:" + hex.EncodeToString(sum[:]), nil
}

// toolVersion is this pipeline's module version, recorded as the SBOMs'
// creating tool next to syft.
func toolVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// Packages lists an SBOM's packages, sorted by type, name and version.
func Packages(s *syftsbom.SBOM) []Package {
	var out []Package
	for p := range s.Artifacts.Packages.Enumerate() {
		pk := Package{Name: p.Name, Version: p.Version, Type: string(p.Type), PURL: p.PURL}
		if m, ok := p.Metadata.(pkg.DpkgDBEntry); ok {
			pk.SourceName, pk.SourceVersion = m.Source, m.SourceVersion
		}
		out = append(out, pk)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Version < b.Version
	})
	return out
}
