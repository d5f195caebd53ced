// Package sbom is the pipeline's bill-of-materials stage: for every built
// image and platform, syft catalogs the image as it will run (the Go
// modules and Go version in the binary's build info, and the base image's
// OS packages from its dpkg metadata) and writes an SPDX 2.3 and a
// CycloneDX 1.6 JSON document. The package inventory is returned too: the
// scan stage checks exactly what the SBOM lists.
//
// The documents are reproducible: their identifiers derive from the image
// digest and the project's source URL and their times from the build's
// SOURCE_DATE_EPOCH, so two builds of one commit write the same bytes. An
// image whose documents are already in the cache (same digest, same
// pipeline, same stamps) is not cataloged again.
package sbom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/darktower/delivery/pipelines/internal/stagecache"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	cyclonedx "github.com/CycloneDX/cyclonedx-go"
	stereofile "github.com/anchore/stereoscope/pkg/file"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
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
	// CacheDir keeps each image's documents under their key, so an
	// unchanged image is not cataloged again ("" = no cache).
	CacheDir string
	Progress io.Writer
}

// Result is the stage's output, in the order of the images and platforms.
type Result struct {
	Documents []*Document
	Reused    int // document pairs taken from the cache
	Took      time.Duration
}

// Generate writes the SBOMs. Any failure fails the stage: an image
// without a bill of materials is not releasable. A cache that cannot be
// read or written only costs a cataloging (said in the progress).
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
	// One license scanner for every image cataloged (syft builds one per
	// call otherwise: compiling licensecheck's patterns, most of a call's
	// CPU time), made only when an image is cataloged.
	licensed := sync.OnceValues(func() (context.Context, error) {
		return syft.SetContextLicenseScanner(ctx, syft.DefaultCreateSBOMConfig().Licenses)
	})
	res := &Result{}
	for _, im := range o.Images {
		for _, p := range im.Platforms {
			w := o.writer(im, p)
			key, err := w.key()
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			doc, err := w.fromCache(o.CacheDir, key, dir)
			if err == nil {
				res.Reused++
				res.Documents = append(res.Documents, doc)
				say("sbom: reused for %s %s (digest %s): %d packages", im.Service, p.Platform, p.Digest, doc.PackageCount)
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				say("sbom: cached documents of %s %s unusable, cataloging again: %v", im.Service, p.Platform, err)
				os.RemoveAll(filepath.Join(o.CacheDir, key)) // replaced below
			}
			img, err := im.Index.Image(mustHash(p.Digest))
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			catalogCtx, err := licensed()
			if err != nil {
				return nil, fmt.Errorf("sbom: %w", err)
			}
			doc, files, err := w.document(catalogCtx, dir, img)
			if err != nil {
				return nil, fmt.Errorf("sbom: %s %s: %w", im.Service, p.Platform, err)
			}
			res.Documents = append(res.Documents, doc)
			say("sbom: %s %s: %d packages", im.Service, p.Platform, doc.PackageCount)
			if err := storeInCache(o.CacheDir, key, doc, files); err != nil {
				say("sbom: warning: not cached (%v): the next build catalogs %s %s again", err, im.Service, p.Platform)
			}
		}
	}
	if o.CacheDir != "" {
		if err := stagecache.PruneEntries(o.CacheDir, cacheRecord, start.Add(-cacheMaxAge)); err != nil {
			say("sbom: warning: pruning the cache: %v", err)
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

// Catalogers are the syft package catalogers run: what these images can
// hold (a Go binary's build info, Debian's dpkg status); syft's file
// catalogers run too, for the files those packages own. Syft's default
// set for images (some 40 catalogers) finds nothing more in them: a
// test compares the documents.
var Catalogers = []string{"go-module-binary-cataloger", "dpkg-db-cataloger"}

// Catalog runs syft over one image.
func Catalog(ctx context.Context, ref string, platform *v1.Platform, img v1.Image) (*syftsbom.SBOM, error) {
	cfg := syft.DefaultCreateSBOMConfig().WithTool(toolName, toolVersion()).
		WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(Catalogers...))
	return catalogWith(ctx, ref, platform, img, cfg)
}

func catalogWith(ctx context.Context, ref string, platform *v1.Platform, img v1.Image, cfg *syft.CreateSBOMConfig) (*syftsbom.SBOM, error) {
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

// key is the cache key of the documents: everything their bytes depend
// on. The pipeline executable's digest stands for how they are made
// (syft's version and catalogers, the encoders, this code).
func (w writer) key() (string, error) {
	pipeline, err := build.PipelineDigest()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "darktower sbom\npipeline %s\nref %s\nplatform %s %s\ncreated %d\nsource %s\nformats spdx-%s cyclonedx-%s\n",
		pipeline, w.ref, w.p.Platform, w.p.Digest, w.created.Unix(), w.sourceURL, SPDXVersion, CycloneDXVersion)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cached is a cache entry's record: the inventory the scan stage reads,
// and the documents' digests (checked on the way out).
type cached struct {
	Document
	Packages []Package `json:"packageList"`
}

const (
	cacheRecord    = "document.json"
	cacheSPDX      = "spdx.json"
	cacheCycloneDX = "cdx.json"
	// An entry not used for this long is removed: the cache holds what
	// recent builds made, not every image ever built.
	cacheMaxAge = 30 * 24 * time.Hour
)

// fromCache writes the documents cached under key into dir; an error
// wrapping fs.ErrNotExist means there are none.
func (w writer) fromCache(cacheDir, key, dir string) (*Document, error) {
	if cacheDir == "" {
		return nil, fs.ErrNotExist
	}
	entry := filepath.Join(cacheDir, key)
	raw, err := os.ReadFile(filepath.Join(entry, cacheRecord))
	if err != nil {
		return nil, err
	}
	var c cached
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", entry, err)
	}
	if c.ImageDigest != w.p.Digest || c.Service != w.im.Service || c.Platform != w.p.Platform.String() {
		return nil, fmt.Errorf("%s records %s %s %s", entry, c.Service, c.Platform, c.ImageDigest)
	}
	var files []file
	for _, f := range []struct{ name, suffix, digest string }{{cacheSPDX, ".spdx.json", c.SPDXDigest}, {cacheCycloneDX, ".cdx.json", c.CycloneDXDigest}} {
		raw, err := os.ReadFile(filepath.Join(entry, f.name))
		if err != nil {
			return nil, err
		}
		if d := sha256Digest(raw); d != f.digest {
			return nil, fmt.Errorf("%s: digest %s, recorded %s", filepath.Join(entry, f.name), d, f.digest)
		}
		files = append(files, file{w.base + f.suffix, raw})
	}
	doc := c.Document
	doc.Packages = c.Packages
	if err := w.write(&doc, dir, files); err != nil {
		return nil, err
	}
	now := time.Now()
	os.Chtimes(filepath.Join(entry, cacheRecord), now, now) // used: kept by prune
	return &doc, nil
}

// storeInCache keeps a new entry, whole or not at all: written aside,
// then renamed into place (a concurrent build's identical entry wins).
func storeInCache(cacheDir, key string, doc *Document, files []file) error {
	if cacheDir == "" {
		return nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cacheDir, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rec, err := json.Marshal(cached{Document: *doc, Packages: doc.Packages})
	if err != nil {
		return err
	}
	for name, raw := range map[string][]byte{cacheRecord: rec, cacheSPDX: files[0].raw, cacheCycloneDX: files[1].raw} {
		if err := os.WriteFile(filepath.Join(tmp, name), raw, 0o644); err != nil {
			return err
		}
	}
	final := filepath.Join(cacheDir, key)
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(filepath.Join(final, cacheRecord)); statErr == nil {
			return nil
		}
		return err
	}
	return nil
}

// DefaultCacheDir is where the CLI keeps SBOMs for reuse.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "darktower", "sbom")
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
