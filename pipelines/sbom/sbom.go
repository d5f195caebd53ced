// Package sbom is the pipeline's bill-of-materials stage: for every built
// image and platform, syft catalogs the image as it will run (the Go
// modules and Go version in the binary's build info, and the base image's
// OS packages from its dpkg metadata) and writes an SPDX 2.3 and a
// CycloneDX 1.6 JSON document. The package inventory is returned too: the
// scan stage checks exactly what the SBOM lists.
//
// The documents are reproducible: their identifiers derive from the image
// digest and the project's source URL and their times from the build's
// SOURCE_DATE_EPOCH, so two builds of one commit write the same bytes.
package sbom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"time"

	cyclonedx "github.com/CycloneDX/cyclonedx-go"
	stereofile "github.com/anchore/stereoscope/pkg/file"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/format/common/cyclonedxhelpers"
	"github.com/anchore/syft/syft/format/common/spdxhelpers"
	"github.com/anchore/syft/syft/pkg"
	syftsbom "github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source/stereoscopesource"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/uuid"
	"github.com/spdx/tools-golang/convert"
	"github.com/spdx/tools-golang/spdx/v2/v2_3"
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
	Images []*build.Image
	Out    string // the build's output directory; documents go to Out/sbom
	// Created is the documents' creation time: the build's
	// SOURCE_DATE_EPOCH (the images' own created time), not the clock.
	Created time.Time
	// SourceURL is the project's repository; the SPDX namespaces live
	// under it ("" or not an absolute URL: urn:uuid namespaces).
	SourceURL string
	Progress  io.Writer
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
	if o.Created.IsZero() {
		return nil, errors.New("sbom: no creation time (Options.Created: the build's SOURCE_DATE_EPOCH)")
	}
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, f+"\n", a...)
		}
	}
	dir := filepath.Join(o.Out, Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	res := &Result{}
	for _, im := range o.Images {
		for _, p := range im.Platforms {
			w := o.writer(im, p)
			img, err := im.Index.Image(mustHash(p.Digest))
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			doc, _, err := w.document(ctx, dir, img)
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			res.Documents = append(res.Documents, doc)
			say("sbom: %s %s: %d packages", im.Service, p.Platform, doc.PackageCount)
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
	cfg := syft.DefaultCreateSBOMConfig().WithTool(toolName, toolVersion())
	return syft.CreateSBOM(ctx, src, cfg)
}

const toolName = "darktower" // the SBOMs' creating tool

// writer makes the documents of one platform image.
type writer struct {
	im        *build.Image
	p         build.PlatformImage
	ref       string // what syft names the source (the documents' name)
	base      string // file name without the format's suffix
	created   time.Time
	sourceURL string
}

func (o Options) writer(im *build.Image, p build.PlatformImage) writer {
	return writer{im: im, p: p, ref: im.Service + ":" + im.Tag + "@" + im.Digest,
		base:    fmt.Sprintf("%s_%s_%s", im.Service, p.Platform.OS, p.Platform.Arch),
		created: o.Created.UTC(), sourceURL: o.SourceURL}
}

// file is one written document.
type file struct {
	name string // under Out/sbom
	raw  []byte
}

func (w writer) document(ctx context.Context, dir string, img v1.Image) (*Document, []file, error) {
	s, err := Catalog(ctx, w.ref, &v1.Platform{OS: w.p.Platform.OS, Architecture: w.p.Platform.Arch}, img)
	if err != nil {
		return nil, nil, err
	}
	doc := &Document{Service: w.im.Service, Platform: w.p.Platform.String(), ImageDigest: w.p.Digest, Packages: Packages(s)}
	doc.PackageCount = len(doc.Packages)
	if d := s.Artifacts.LinuxDistribution; d != nil && d.ID != "" {
		doc.OS = &OS{ID: d.ID, VersionID: d.VersionID}
	}
	spdx, err := w.encodeSPDX(*s)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding SPDX: %w", err)
	}
	cdx, err := w.encodeCycloneDX(*s)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding CycloneDX: %w", err)
	}
	files := []file{{w.base + ".spdx.json", spdx}, {w.base + ".cdx.json", cdx}}
	if err := w.write(doc, dir, files); err != nil {
		return nil, nil, err
	}
	return doc, files, nil
}

// write puts the documents in dir and records them in doc.
func (w writer) write(doc *Document, dir string, files []file) error {
	for i, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.raw, 0o644); err != nil {
			return err
		}
		rel, digest := filepath.Join(Dir, f.name), sha256Digest(f.raw)
		if i == 0 {
			doc.SPDX, doc.SPDXDigest = rel, digest
		} else {
			doc.CycloneDX, doc.CycloneDXDigest = rel, digest
		}
	}
	return nil
}

func sha256Digest(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// encodeSPDX is syft's spdxjson encoder (SPDX 2.3, pretty, HTML not
// escaped) with the namespace and creation time set here: syft's are a
// random UUID under anchore.com and the clock.
func (w writer) encodeSPDX(s syftsbom.SBOM) ([]byte, error) {
	latest := spdxhelpers.ToFormatModel(s)
	if latest == nil {
		return nil, errors.New("syft made no SPDX document")
	}
	latest.DocumentNamespace = w.namespace(s.Descriptor)
	latest.CreationInfo.Created = w.created.Format(time.RFC3339)
	var doc v2_3.Document
	if err := convert.Document(latest, &doc); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeCycloneDX is syft's cyclonedxjson encoder (1.6, pretty, HTML not
// escaped) with the serial number and timestamp set here: syft's are a
// random UUID and the clock.
func (w writer) encodeCycloneDX(s syftsbom.SBOM) ([]byte, error) {
	bom := cyclonedxhelpers.ToFormatModel(s)
	bom.SerialNumber = "urn:uuid:" + w.id(s.Descriptor, "cyclonedx-"+CycloneDXVersion).String()
	bom.Metadata.Timestamp = w.created.Format(time.RFC3339)
	var buf bytes.Buffer
	enc := cyclonedx.NewBOMEncoder(&buf, cyclonedx.BOMFileFormatJSON)
	enc.SetPretty(true)
	enc.SetEscapeHTML(false)
	if err := enc.EncodeVersion(bom, cyclonedx.SpecVersion1_6); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// id names one document: a UUID (version 5) of the source URL, the
// platform image's digest and what wrote the document (syft's and this
// pipeline's versions, the format). So the same image gets the same
// identifier in every build, and a new image or generator a new one.
func (w writer) id(d syftsbom.Descriptor, format string) uuid.UUID {
	name := fmt.Sprintf("%s\n%s\n%s\nsyft %s\n%s %s\n%s", w.sourceURL, w.ref, w.p.Digest, syftVersion(), d.Name, d.Version, format)
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte(name))
}

// namespace is the SPDX document namespace: under the project's source
// URL when it is an absolute URL (SPDX requires a URI with a scheme and
// no fragment), else a urn:uuid.
func (w writer) namespace(d syftsbom.Descriptor) string {
	id := w.id(d, "spdx-"+SPDXVersion).String()
	if u, err := url.Parse(w.sourceURL); err == nil && u.Scheme != "" && u.Host != "" && u.Fragment == "" && u.RawQuery == "" {
		return u.JoinPath("sbom", w.base+"-"+id).String()
	}
	return "urn:uuid:" + id
}

// syftVersion is the syft module this pipeline links (its documents
// depend on it).
func syftVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/anchore/syft" {
				return d.Version
			}
		}
	}
	return "unknown"
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
