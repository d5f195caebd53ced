// Package scan is the pipeline's vulnerability gate. It checks what each
// image's SBOM lists (pipelines/sbom) against Trivy's vulnerability DB
// with Trivy's own detectors — the Go ecosystem's advisories for the
// binary's modules and Go version, Debian's for the base's packages — and
// blocks the release when a finding at or above the threshold is not
// covered by an accepted, unexpired exception. Go findings also get their
// reachability from govulncheck (golang.org/x/vuln) run on each binary
// against the pinned Go vulnerability database; with that database as the
// source (SourceGoVulnDB) they are the findings, and a reachable
// vulnerable symbol blocks.
//
// Trivy's image analyzers are not used: they go through trivy's
// encoding/json/v2 helpers written for Go 1.26's experimental API, which
// Go 1.27 changed (json.SkipFunc is gone). Scanning the SBOM is also what
// `trivy sbom` does, and it scans exactly what was inventoried.
package scan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"time"

	trivydb "github.com/aquasecurity/trivy-db/pkg/db"
	dbTypes "github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy/pkg/detector/library"
	"github.com/aquasecurity/trivy/pkg/detector/ospkg"
	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
	"github.com/aquasecurity/trivy/pkg/types"
	"github.com/aquasecurity/trivy/pkg/vulnerability"
	packageurl "github.com/package-url/packageurl-go"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/stagecache"
	"github.com/darktower/delivery/pipelines/sbom"
)

// DefaultThreshold blocks CRITICAL findings (ADR-0012 §7).
const DefaultThreshold = "CRITICAL"

// Options are the stage's inputs. With SourceTrivy the DB must be open
// (OpenDB).
type Options struct {
	Documents  []*sbom.Document
	Threshold  string      // LOW, MEDIUM, HIGH or CRITICAL ("" = CRITICAL)
	Exceptions *Exceptions // nil: none
	Progress   io.Writer
	// Source judges the build: SourceTrivy ("" too; Trivy's detectors and
	// the open DB, gated on severity) or SourceGoVulnDB (govulncheck's
	// findings, gated on reachability; OS packages are not covered).
	// SourceVersion and SourceDate say which data and when, for the reports.
	Source        string
	SourceVersion string
	SourceDate    time.Time
	// GoCheck gives govulncheck's findings for an image platform's binary.
	// With SourceTrivy it is asked only for images with Go findings, to
	// give each its reachability (a failure leaves them "not checked",
	// with the reason); with SourceGoVulnDB its findings are the Go
	// findings and a failure fails the scan.
	GoCheck func(ctx context.Context, service, platform string) ([]*GoVuln, error)
	// GoData names the data GoCheck judges with (nil: the pinned version).
	GoData *GoVulnData
	// DataKey identifies the vulnerability data the findings come from
	// (DBIdentity for Trivy's DB; the module version for the Go
	// database). With CacheDir, each image's raw findings are kept under
	// a key of the image, its SBOM, the source, DataKey and this pipeline,
	// so an unchanged image under unchanged data is not scanned again;
	// the judgement (threshold, exceptions) is always made anew from them.
	DataKey  string
	CacheDir string // "" = no reuse
}

// Finding is one vulnerability in one package of one image.
type Finding struct {
	ID        string `json:"id"`
	Severity  string `json:"severity"`
	Package   string `json:"package"`
	Installed string `json:"installed"`
	Fixed     string `json:"fixed,omitempty"`
	Title     string `json:"title,omitempty"`
	Class     string `json:"class"` // os-pkgs or lang-pkgs, as Trivy names them
	// Reachability (Go findings): Reachable, Unreachable, or why it is not
	// known; Symbols are the vulnerable symbols the binary holds.
	Reachability string   `json:"reachability,omitempty"`
	Symbols      []string `json:"symbols,omitempty"`
	// Aliases (Go database findings): the advisory's CVE and GHSA IDs, which
	// exceptions may name instead of the GO- ID.
	Aliases []string `json:"aliases,omitempty"`
	// Accepted is the exception's reason when one covers the finding.
	Accepted string `json:"accepted,omitempty"`
	Blocking bool   `json:"blocking"`
	detected types.DetectedVulnerability
}

// Image is one scanned image platform.
type Image struct {
	Service  string         `json:"service"`
	Platform string         `json:"platform"`
	Digest   string         `json:"digest"`
	OS       *sbom.OS       `json:"os,omitempty"`
	Findings []*Finding     `json:"findings"`
	Counts   map[string]int `json:"counts"` // per severity, accepted ones included
	Blocking int            `json:"blocking"`
	// NotCovered are the OS packages (name version) the source does not
	// judge: with SourceGoVulnDB, every Debian package of the base.
	NotCovered []string `json:"notCovered,omitempty"`
}

// Result is the stage's output.
type Result struct {
	Threshold string `json:"threshold"`
	// Gate is what blocks, in words: "CRITICAL and above", or with
	// SourceGoVulnDB "a reachable vulnerable symbol".
	Gate          string    `json:"gate"`
	Source        string    `json:"source"`
	SourceVersion string    `json:"sourceVersion,omitempty"`
	SourceDate    time.Time `json:"sourceDate"`
	Images        []*Image  `json:"images"`
	// SpecDir is where the images' specs are, relative to the repository
	// ("" = images): SARIF locates each finding at its image's spec.
	SpecDir string `json:"-"`
	Started time.Time
	Took    time.Duration
	// Reused counts the images whose findings came from the cache (they
	// were judged again all the same).
	Reused int `json:"-"`
}

// Blocking lists every blocking finding with its image.
func (r *Result) Blocking() []string {
	var out []string
	for _, im := range r.Images {
		for _, f := range im.Findings {
			if f.Blocking {
				fixed := f.Fixed
				if fixed == "" {
					fixed = "no fixed version yet"
				}
				line := fmt.Sprintf("%s %s in %s (%s): %s %s installed, fixed in %s",
					f.Severity, f.ID, im.Service, im.Platform, f.Package, f.Installed, fixed)
				if f.Reachability == Reachable {
					line += "; reachable: " + strings.Join(f.Symbols, ", ")
				}
				out = append(out, line)
			}
		}
	}
	return out
}

// BlockedError is the gate's refusal: it names each blocking finding.
type BlockedError struct {
	Gate     string // Result.Gate
	Findings []string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("vulnerability gate (blocks %s): %d finding(s) without an accepted exception (nothing is signed or pushed):\n  %s\n"+
		"fix them (upgrade the module or the base: go run . update-base), or accept one in %s with id, reason and expires",
		e.Gate, len(e.Findings), strings.Join(e.Findings, "\n  "), ExceptionsFile)
}

// ParseThreshold checks a --severity value.
func ParseThreshold(s string) (dbTypes.Severity, error) {
	if s == "" {
		s = DefaultThreshold
	}
	sev, err := dbTypes.NewSeverity(strings.ToUpper(s))
	if err != nil || sev == dbTypes.SeverityUnknown {
		return 0, fmt.Errorf("--severity %q: expected one of LOW, MEDIUM, HIGH, CRITICAL", s)
	}
	return sev, nil
}

// Scan checks every document. It returns the result and, when anything
// blocks, a *BlockedError alongside it (the reports are still written).
func Scan(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	threshold, err := ParseThreshold(o.Threshold)
	if err != nil {
		return nil, err
	}
	res := &Result{Threshold: threshold.String(), Gate: threshold.String() + " and above", Started: start,
		Source: o.Source, SourceVersion: o.SourceVersion, SourceDate: o.SourceDate}
	switch o.Source {
	case "", SourceTrivy:
		res.Source = SourceTrivy
	case SourceGoVulnDB:
		res.Gate = "a reachable vulnerable symbol (the Go vulnerability database has no severities)"
	default:
		return nil, fmt.Errorf("scan: unknown vulnerability source %q", o.Source)
	}
	vulnInfo := vulnerability.NewClient(trivydb.Config{})
	for _, doc := range o.Documents {
		im := &Image{Service: doc.Service, Platform: doc.Platform, Digest: doc.ImageDigest, OS: doc.OS, Counts: map[string]int{}}
		key, err := o.findingsKey(doc, res.Source)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		var findings []*Finding
		var c cachedFindings
		switch err := stagecache.Get(o.CacheDir, key, &c); {
		case err == nil && c.Digest == doc.ImageDigest:
			findings, im.NotCovered = c.findings(), c.NotCovered
			res.Reused++
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "scan: findings reused for %s %s (same image, SBOM and vulnerability data: %s); judged again against the gate and exceptions\n",
					doc.Service, doc.Platform, o.dataName(res.Source))
			}
		default:
			if err != nil && !errors.Is(err, fs.ErrNotExist) && o.Progress != nil {
				fmt.Fprintf(o.Progress, "scan: cached findings of %s %s unusable, scanning again: %v\n", doc.Service, doc.Platform, err)
			}
			var checked bool
			if findings, im.NotCovered, checked, err = o.rawFindings(ctx, doc, res.Source, vulnInfo); err != nil {
				return nil, err
			}
			if checked { // a govulncheck that failed is tried again next time
				if err := stagecache.Put(o.CacheDir, key, newCachedFindings(doc.ImageDigest, findings, im.NotCovered)); err != nil && o.Progress != nil {
					fmt.Fprintf(o.Progress, "scan: warning: findings not cached (%v): the next build scans %s %s again\n", err, doc.Service, doc.Platform)
				}
			}
		}
		for _, f := range findings {
			if f.Severity == "" {
				f.Severity = dbTypes.SeverityUnknown.String()
			}
			im.Counts[f.Severity]++
			sev, _ := dbTypes.NewSeverity(f.Severity)
			blocks := sev >= threshold
			if res.Source == SourceGoVulnDB {
				blocks = f.Reachability == Reachable
			}
			e := o.Exceptions.Covering(f.ID, doc.Service, f.Package)
			for _, a := range f.Aliases {
				if e == nil {
					e = o.Exceptions.Covering(a, doc.Service, f.Package)
				}
			}
			if e != nil {
				f.Accepted = fmt.Sprintf("%s (until %s)", e.Reason, e.Expires)
			} else if blocks {
				f.Blocking = true
				im.Blocking++
			}
			im.Findings = append(im.Findings, f)
		}
		sort.SliceStable(im.Findings, func(i, j int) bool { return less(im.Findings[i], im.Findings[j]) })
		res.Images = append(res.Images, im)
		if o.Progress != nil {
			reach := ""
			if n := countReach(im.Findings); n != "" {
				reach = " (Go: " + n + ")"
			}
			fmt.Fprintf(o.Progress, "scan: %s %s: %d package(s), %s%s; %d blocking\n", doc.Service, doc.Platform, len(doc.Packages), counts(im.Counts), reach, im.Blocking)
			if len(im.NotCovered) > 0 {
				fmt.Fprintf(o.Progress, "scan: %s %s: %d OS package(s) NOT COVERED by %s: %s\n", doc.Service, doc.Platform, len(im.NotCovered), res.Source, strings.Join(im.NotCovered, ", "))
			}
		}
	}
	if o.CacheDir != "" {
		if err := stagecache.Prune(o.CacheDir, start.Add(-stagecache.MaxAge)); err != nil && o.Progress != nil {
			fmt.Fprintf(o.Progress, "scan: warning: pruning the cache: %v\n", err)
		}
	}
	res.Took = time.Since(start)
	if blocking := res.Blocking(); len(blocking) > 0 {
		return res, &BlockedError{Gate: res.Gate, Findings: blocking}
	}
	return res, nil
}

// rawFindings are one image's findings before any judgement: what the
// source finds in its SBOM (and, for Go findings, their reachability),
// and the OS packages the source does not cover. checked is false when
// govulncheck failed (the findings' reachability is then not known).
func (o Options) rawFindings(ctx context.Context, doc *sbom.Document, source string, vulnInfo vulnerability.Client) (findings []*Finding, notCovered []string, checked bool, err error) {
	if source == SourceGoVulnDB {
		if o.GoCheck == nil {
			return nil, nil, false, errors.New("scan: the Go vulnerability database source needs govulncheck's findings (Options.GoCheck)")
		}
		govulns, err := o.GoCheck(ctx, doc.Service, doc.Platform)
		if err != nil {
			return nil, nil, false, fmt.Errorf("scan: %s %s: %w", doc.Service, doc.Platform, err)
		}
		findings = goVulnFindings(govulns)
		for _, p := range doc.Packages {
			if p.Type == "deb" {
				notCovered = append(notCovered, p.Name+" "+p.Version)
			}
		}
		return findings, notCovered, true, nil
	}
	detected, err := detect(ctx, doc)
	if err != nil {
		return nil, nil, false, fmt.Errorf("scan: %s %s: %w", doc.Service, doc.Platform, err)
	}
	vulnInfo.FillInfo(detected, []dbTypes.SourceID{"auto"}) // Trivy's default --severity-src
	var govulns []*GoVuln
	notChecked := ""
	if o.GoCheck != nil && slices.ContainsFunc(detected, func(d types.DetectedVulnerability) bool { return classOf(d) == classLang }) {
		if govulns, err = o.GoCheck(ctx, doc.Service, doc.Platform); err != nil {
			notChecked = err.Error()
		}
	}
	for _, d := range detected {
		f := &Finding{ID: d.VulnerabilityID, Severity: d.Severity, Package: d.PkgName, Installed: d.InstalledVersion,
			Fixed: d.FixedVersion, Title: d.Title, Class: classOf(d), detected: d}
		if f.Class == classLang {
			f.Reachability, f.Symbols = reachability(f, govulns, notChecked, o)
		}
		findings = append(findings, f)
	}
	return findings, nil, notChecked == "", nil
}

// findingsKey is the cache key of an image's raw findings: everything
// they depend on. The pipeline executable's digest stands for how they
// are found (Trivy's detectors, govulncheck, this code).
func (o Options) findingsKey(doc *sbom.Document, source string) (string, error) {
	pipeline, err := build.PipelineDigest()
	if err != nil {
		return "", err
	}
	return stagecache.Key("darktower scan findings", "pipeline "+pipeline, "source "+source, "data "+o.DataKey,
		"go-data "+o.goDataName(), "image "+doc.Service+" "+doc.Platform+" "+doc.ImageDigest,
		"sbom "+doc.SPDXDigest+" "+doc.CycloneDXDigest), nil
}

// goDataName is the Go vulnerability data govulncheck judges with.
func (o Options) goDataName() string {
	if o.GoData != nil {
		return o.GoData.String()
	}
	return GoVulnDBModule + "@" + GoVulnDBVersion
}

// dataName says which data the findings came from, for the progress.
func (o Options) dataName(source string) string {
	if o.SourceVersion != "" {
		return o.SourceVersion + ", updated " + o.SourceDate.UTC().Format(time.RFC3339)
	}
	return source
}

// cachedFindings is a cache entry: the raw findings (no judgement) with
// Trivy's detection record, which the reports are written from.
type cachedFindings struct {
	Digest     string          `json:"digest"`
	Findings   []cachedFinding `json:"findings"`
	NotCovered []string        `json:"notCovered,omitempty"`
}

type cachedFinding struct {
	Finding
	Detected types.DetectedVulnerability `json:"detected"`
}

func newCachedFindings(digest string, fs []*Finding, notCovered []string) cachedFindings {
	c := cachedFindings{Digest: digest, NotCovered: notCovered}
	for _, f := range fs {
		raw := *f
		raw.Accepted, raw.Blocking = "", false // the judgement is not kept
		c.Findings = append(c.Findings, cachedFinding{Finding: raw, Detected: f.detected})
	}
	return c
}

func (c cachedFindings) findings() []*Finding {
	var out []*Finding
	for _, cf := range c.Findings {
		f := cf.Finding
		f.Accepted, f.Blocking, f.detected = "", false, cf.Detected
		out = append(out, &f)
	}
	return out
}

// goVulnFindings are govulncheck's findings as the gate's: UNKNOWN
// severity (the Go database has none), in Trivy's report shape too.
func goVulnFindings(vulns []*GoVuln) []*Finding {
	var out []*Finding
	for _, v := range vulns {
		installed, fixed := strings.TrimPrefix(v.Version, "v"), strings.TrimPrefix(v.Fixed, "v")
		if v.Module == "stdlib" {
			installed, fixed = strings.TrimPrefix(v.Version, "go"), strings.TrimPrefix(v.Fixed, "go")
		}
		f := &Finding{ID: v.ID, Severity: dbTypes.SeverityUnknown.String(), Package: v.Module, Installed: installed, Fixed: fixed,
			Title: v.Summary, Class: classLang, Reachability: v.Reachability, Symbols: v.Symbols, Aliases: v.Aliases}
		f.detected = types.DetectedVulnerability{VulnerabilityID: v.ID, VendorIDs: v.Aliases, PkgName: v.Module,
			InstalledVersion: installed, FixedVersion: fixed, PrimaryURL: "https://pkg.go.dev/vuln/" + v.ID,
			Vulnerability: dbTypes.Vulnerability{Title: v.Summary, Severity: f.Severity}}
		out = append(out, f)
	}
	return out
}

// reachability is a Trivy Go finding's: govulncheck's for the same
// advisory (its ID or an alias) and module, else why it is not known.
func reachability(f *Finding, vulns []*GoVuln, notChecked string, o Options) (string, []string) {
	if o.GoCheck == nil || notChecked != "" {
		if notChecked == "" {
			notChecked = "govulncheck did not run"
		}
		return "not checked: " + notChecked, nil
	}
	for _, v := range vulns {
		if v.Module == f.Package && v.Names(f.ID) {
			return v.Reachability, v.Symbols
		}
	}
	data := GoVulnDBModule + "@" + GoVulnDBVersion
	if o.GoData != nil {
		data = o.GoData.String()
	}
	return "unknown: " + data + " has no such advisory for this module version", nil
}

// countReach counts the Go findings per reachability.
func countReach(fs []*Finding) string {
	var r, u int
	for _, f := range fs {
		switch f.Reachability {
		case Reachable:
			r++
		case Unreachable:
			u++
		}
	}
	if r+u == 0 {
		return ""
	}
	return fmt.Sprintf("%d reachable, %d unreachable", r, u)
}

// less orders blocking findings first, then by severity, id, package.
func less(a, b *Finding) bool {
	if a.Blocking != b.Blocking {
		return a.Blocking
	}
	if c := dbTypes.CompareSeverityString(a.Severity, b.Severity); c != 0 {
		return c < 0
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.Package < b.Package
}

func counts(c map[string]int) string {
	var parts []string
	for _, s := range slices.Backward(dbTypes.SeverityNames) {
		if c[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[s], s))
		}
	}
	if len(parts) == 0 {
		return "no vulnerabilities"
	}
	return strings.Join(parts, ", ")
}

const (
	classOS   = "os-pkgs"
	classLang = "lang-pkgs"
)

func classOf(d types.DetectedVulnerability) string {
	if d.PkgIdentifier.PURL != nil && d.PkgIdentifier.PURL.Type == "deb" {
		return classOS
	}
	return classLang
}

// detect runs Trivy's detectors over one SBOM's packages.
func detect(ctx context.Context, doc *sbom.Document) ([]types.DetectedVulnerability, error) {
	goPkgs, debPkgs := trivyPackages(doc.Packages)
	var out []types.DetectedVulnerability
	if len(goPkgs) > 0 {
		vulns, err := library.Detect(ctx, ftypes.GoBinary, goPkgs)
		if err != nil {
			return nil, fmt.Errorf("Go advisories: %w", err)
		}
		out = append(out, vulns...)
	}
	if len(debPkgs) > 0 {
		if doc.OS == nil || doc.OS.ID != string(ftypes.Debian) {
			return nil, errors.New("the image has Debian packages but its os-release does not say Debian: its OS packages cannot be matched")
		}
		d, err := ospkg.NewDetector(types.ScanTarget{Name: doc.Service,
			OS: ftypes.OS{Family: ftypes.Debian, Name: doc.OS.VersionID}, Packages: debPkgs})
		if err != nil {
			return nil, fmt.Errorf("Debian advisories: %w", err)
		}
		vulns, _, err := d.Detect(ctx)
		if err != nil {
			return nil, fmt.Errorf("Debian advisories: %w", err)
		}
		out = append(out, vulns...)
	}
	return out, nil
}

// trivyPackages converts the SBOM's inventory into what Trivy's detectors
// take, written the way Trivy's own analyzers write them: Go versions
// without the "v" (and "stdlib" without "go"), Debian packages with their
// source package.
func trivyPackages(pkgs []sbom.Package) (goPkgs, debPkgs []ftypes.Package) {
	for _, p := range pkgs {
		switch p.Type {
		case "go-module":
			if p.Version == "" || p.Version == "(devel)" || p.Version == "UNKNOWN" {
				continue // the service's own main module
			}
			v := strings.TrimPrefix(p.Version, "v")
			if p.Name == "stdlib" {
				v = strings.TrimPrefix(p.Version, "go")
			}
			goPkgs = append(goPkgs, ftypes.Package{ID: p.Name + "@" + v, Name: p.Name, Version: v,
				Identifier: identifier(p.PURL)})
		case "deb":
			src, srcVersion := p.SourceName, p.SourceVersion
			if src == "" {
				src = p.Name
			}
			if srcVersion == "" {
				srcVersion = p.Version
			}
			debPkgs = append(debPkgs, ftypes.Package{ID: p.Name + "@" + p.Version, Name: p.Name, Version: p.Version,
				SrcName: src, SrcVersion: srcVersion, Identifier: identifier(p.PURL)})
		}
	}
	return goPkgs, debPkgs
}

func identifier(purl string) ftypes.PkgIdentifier {
	id := ftypes.PkgIdentifier{}
	if p, err := packageurl.FromString(purl); err == nil {
		id.PURL = &p
	}
	return id
}
