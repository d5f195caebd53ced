package build

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Output file names under the output directory.
const (
	LayoutDir    = "oci"
	ManifestFile = "manifest.json"
	SummaryFile  = "summary.md"
)

// Manifest is dist/manifest.json: what the build produced, for later
// stages and for people.
type Manifest struct {
	Version  string   `json:"version"`
	Revision string   `json:"revision"`
	Created  string   `json:"created"`
	Layout   string   `json:"layout"`
	Images   []*Image `json:"images"`
	// GoTags: a test build's `go build -tags` (never published).
	GoTags []string `json:"goTags,omitempty"`
	// Scan: the vulnerability gate's threshold, DB and reports (scan stage).
	Scan *ScanRecord `json:"scan,omitempty"`
	// Stages: how long each stage took, in order.
	Stages []StageTime `json:"stages,omitempty"`
}

// SBOMRecord locates a platform image's SBOMs (relative to the output
// directory) and their digests.
type SBOMRecord struct {
	SPDX            string `json:"spdx"`
	SPDXDigest      string `json:"spdxDigest"`
	CycloneDX       string `json:"cyclonedx"`
	CycloneDXDigest string `json:"cyclonedxDigest"`
	Packages        int    `json:"packages"`
}

// VulnCounts are a platform image's findings per severity (accepted ones
// included) and how many of them blocked.
type VulnCounts struct {
	Critical int `json:"critical"`
	High     int `json:"high"`
	Medium   int `json:"medium"`
	Low      int `json:"low"`
	Unknown  int `json:"unknown"`
	Blocking int `json:"blocking"`
}

// SignatureRecord: the cosign signature and attestation artifacts of an
// image index, in the OCI layout (and the registry once pushed).
type SignatureRecord struct {
	Signature    string   `json:"signature"`    // digest of the .sig artifact
	Attestations string   `json:"attestations"` // digest of the .att artifact
	Predicates   []string `json:"predicates"`
	Key          string   `json:"key"` // where the key came from (never the key)
	Development  bool     `json:"developmentKey,omitempty"`
}

// ScanRecord is what the vulnerability gate used and wrote.
type ScanRecord struct {
	Threshold     string `json:"threshold"`
	Source        string `json:"source"` // trivy or go-vulndb
	SourceVersion string `json:"sourceVersion"`
	// DBUpdatedAt is the source's data's date.
	DBUpdatedAt string   `json:"dbUpdatedAt"`
	Reports     []string `json:"reports"`
	SARIF       string   `json:"sarif"`
}

// StageTime is one stage's duration.
type StageTime struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
}

// PrepareOutput makes sure out is writable and removes a previous
// manifest, so a failed build never leaves one claiming old images.
func PrepareOutput(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("output directory %s: %w (choose another with --out)", out, err)
	}
	probe, err := os.CreateTemp(out, ".write-test-")
	if err != nil {
		return fmt.Errorf("output directory %s is not writable: %w (choose another with --out)", out, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	for _, f := range []string{ManifestFile, SummaryFile} {
		if err := os.Remove(filepath.Join(out, f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// WriteOutputs writes the OCI layout (every image tagged service:version),
// then manifest.json and the Markdown summary — the manifest last, and by
// rename, so it exists only when everything it names does.
func WriteOutputs(out string, res *Result, version, revision string, epoch time.Time) (*Manifest, error) {
	m, err := WriteLayout(out, res, version, revision, epoch)
	if err != nil {
		return nil, err
	}
	return m, Finish(out, m, res, "")
}

// WriteLayout writes the OCI layout and returns the manifest describing
// it, not yet written: later stages (sbom, scan) add to it, and Finish
// writes it.
func WriteLayout(out string, res *Result, version, revision string, epoch time.Time) (*Manifest, error) {
	layoutPath := filepath.Join(out, LayoutDir)
	tmpLayout := layoutPath + ".tmp"
	os.RemoveAll(tmpLayout)
	p, err := layout.Write(tmpLayout, empty.Index)
	if err != nil {
		return nil, err
	}
	for _, img := range res.Images {
		if err := p.AppendIndex(img.Index, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": img.Tag,
		})); err != nil {
			return nil, fmt.Errorf("writing %s to the OCI layout: %w", img.Service, err)
		}
	}
	if err := os.RemoveAll(layoutPath); err != nil {
		return nil, err
	}
	if err := os.Rename(tmpLayout, layoutPath); err != nil {
		return nil, err
	}
	// Reused images were read from the layout just replaced: point every
	// image at the new one, so later steps (push, load) read what is there.
	final, err := layout.FromPath(layoutPath)
	if err != nil {
		return nil, err
	}
	for i, img := range res.Images {
		if res.Images[i], err = fromLayout(final, img); err != nil {
			return nil, err
		}
		res.Images[i].Reused = img.Reused
	}
	return &Manifest{Version: version, Revision: revision, Created: epoch.UTC().Format(time.RFC3339), Layout: LayoutDir, Images: res.Images}, nil
}

// WriteSummary writes summary.md: the build's table, then the later
// stages' Markdown sections.
func WriteSummary(out string, m *Manifest, res *Result, sections string) error {
	return os.WriteFile(filepath.Join(out, SummaryFile), []byte(Summary(m, res)+sections), 0o644)
}

// Finish writes summary.md, then manifest.json last: its presence says
// every stage before it succeeded.
func Finish(out string, m *Manifest, res *Result, sections string) error {
	if err := WriteSummary(out, m, res, sections); err != nil {
		return err
	}
	return WriteManifest(out, m)
}

// ReadManifest reads a manifest.json a build wrote.
func ReadManifest(path string) (*Manifest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w (run build-all first)", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(m.Images) == 0 {
		return nil, fmt.Errorf("%s names no images", path)
	}
	return &m, nil
}

// WriteManifest (re)writes manifest.json atomically.
func WriteManifest(out string, m *Manifest) error {
	return writeJSONAtomically(filepath.Join(out, ManifestFile), m)
}

// writeJSONAtomically writes v as indented JSON to a temporary file and
// renames it over path, so readers see the old file or the new, whole.
func writeJSONAtomically(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Summary renders the Markdown summary (also suitable for a CI job summary).
func Summary(m *Manifest, res *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Dark Tower build %s\n\nRevision `%s`, created %s.\n\n", m.Version, m.Revision, m.Created)
	b.WriteString("| service | index digest | platform | image digest | compressed | uncompressed | layers |\n")
	b.WriteString("|---|---|---|---|---:|---:|---:|\n")
	for _, img := range m.Images {
		for i, p := range img.Platforms {
			name, digest := "", ""
			if i == 0 {
				name, digest = img.Service, "`"+shortDigest(img.Digest)+"`"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | `%s` | %s | %s | %d |\n", name, digest, p.Platform,
				shortDigest(p.Digest), humanBytes(p.CompressedSize), humanBytes(p.UncompressedSize), p.Layers)
		}
	}
	if len(m.Images) > 0 {
		fmt.Fprintf(&b, "\nBase: %s (`%s`).\n", m.Images[0].BaseName, shortDigest(m.Images[0].BaseDigest))
	}
	if res != nil {
		fmt.Fprintf(&b, "\n| stage | duration |\n|---|---:|\n| compile | %s |\n| build (compile + assemble) | %s |\n",
			res.Compile.Round(time.Millisecond), res.Build.Round(time.Millisecond))
	}
	return b.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
