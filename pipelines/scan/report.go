package scan

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	dbTypes "github.com/aquasecurity/trivy-db/pkg/types"
	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
	"github.com/aquasecurity/trivy/pkg/types"
	"github.com/owenrumney/go-sarif/v2/sarif"
)

// Dir holds the reports under the output directory.
const (
	Dir       = "scan"
	SARIFFile = "scan/results.sarif"
)

// Reports are the written files, relative to the output directory.
type Reports struct {
	Trivy []string `json:"trivy"` // one Trivy JSON report per image platform
	SARIF string   `json:"sarif"`
}

// WriteReports writes Trivy's JSON report per image platform and one
// SARIF 2.1.0 log for GitHub code scanning (blocking findings as errors).
func WriteReports(out string, res *Result) (*Reports, error) {
	if err := os.MkdirAll(filepath.Join(out, Dir), 0o755); err != nil {
		return nil, err
	}
	reps := &Reports{SARIF: SARIFFile}
	for _, im := range res.Images {
		name := filepath.Join(Dir, fmt.Sprintf("%s_%s.trivy.json", im.Service, strings.ReplaceAll(im.Platform, "/", "_")))
		raw, err := json.MarshalIndent(trivyReport(im), "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(out, name), append(raw, '\n'), 0o644); err != nil {
			return nil, err
		}
		reps.Trivy = append(reps.Trivy, name)
	}
	log, err := SARIF(res)
	if err != nil {
		return nil, err
	}
	if err := log.WriteFile(filepath.Join(out, SARIFFile)); err != nil {
		return nil, err
	}
	return reps, nil
}

// trivyReport is the image's findings in Trivy's JSON report format
// (schema 2), one result per package class.
func trivyReport(im *Image) types.Report {
	rep := types.Report{SchemaVersion: 2, ArtifactName: im.Service + "@" + im.Digest, ArtifactType: ftypes.TypeContainerImage}
	if im.OS != nil {
		rep.Metadata.OS = &ftypes.OS{Family: ftypes.OSType(im.OS.ID), Name: im.OS.VersionID}
	}
	byClass := map[string][]types.DetectedVulnerability{}
	for _, f := range im.Findings {
		d := f.detected
		if f.Reachability != "" {
			d.Custom = map[string]any{"reachability": f.Reachability, "symbols": f.Symbols}
		}
		byClass[f.Class] = append(byClass[f.Class], d)
	}
	// OS packages no source judged get no (empty, "clean"-looking) result.
	if im.OS != nil && len(im.NotCovered) == 0 {
		rep.Results = append(rep.Results, types.Result{Target: fmt.Sprintf("%s (%s %s)", im.Service, im.OS.ID, im.OS.VersionID),
			Class: types.ClassOSPkg, Type: ftypes.TargetType(im.OS.ID), Vulnerabilities: byClass[classOS]})
	}
	rep.Results = append(rep.Results, types.Result{Target: "usr/local/bin/" + im.Service,
		Class: types.ClassLangPkg, Type: ftypes.GoBinary, Vulnerabilities: byClass[classLang]})
	return rep
}

// SARIF is the result as a SARIF 2.1.0 log: a rule per vulnerability, a
// result per finding located at the service's image spec (what builds the
// image), level error when it blocks, warning otherwise, note when accepted.
func SARIF(res *Result) (*sarif.Report, error) {
	log, err := sarif.New(sarif.Version210)
	if err != nil {
		return nil, err
	}
	run := sarif.NewRunWithInformationURI("Trivy", "https://github.com/aquasecurity/trivy")
	if res.Source == SourceGoVulnDB {
		run = sarif.NewRunWithInformationURI("govulncheck", "https://pkg.go.dev/golang.org/x/vuln/cmd/govulncheck")
	}
	// Which source judged the build, its data's date, and what it left out.
	props := sarif.Properties{"source": res.Source, "sourceVersion": res.SourceVersion, "sourceDate": res.SourceDate.UTC().Format(time.RFC3339), "gate": res.Gate}
	notCovered := map[string][]string{}
	specDir := res.SpecDir
	if specDir == "" {
		specDir = "images"
	}
	for _, im := range res.Images {
		if len(im.NotCovered) > 0 {
			notCovered[im.Service+" "+im.Platform] = im.NotCovered
		}
	}
	if len(notCovered) > 0 {
		props["notCovered"] = notCovered
	}
	run.Properties = props
	rules := map[string]bool{}
	for _, im := range res.Images {
		for _, f := range im.Findings {
			if !rules[f.ID] {
				rules[f.ID] = true
				title := f.Title
				if title == "" {
					title = f.ID
				}
				run.AddRule(f.ID).WithDescription(title).WithHelpURI(f.detected.PrimaryURL).
					WithProperties(sarif.Properties{"security-severity": securitySeverity(f.Severity), "tags": []string{"vulnerability", "security", f.Severity}})
			}
			level := "warning"
			switch {
			case f.Blocking:
				level = "error"
			case f.Accepted != "":
				level = "note"
			}
			msg := fmt.Sprintf("%s %s in %s (%s): %s %s installed, fixed in %s", f.Severity, f.ID, im.Service, im.Platform, f.Package, f.Installed, orNone(f.Fixed))
			if f.Reachability != "" {
				msg += "; " + f.Reachability
				if len(f.Symbols) > 0 {
					msg += ": " + strings.Join(f.Symbols, ", ")
				}
			}
			if f.Accepted != "" {
				msg += "; accepted: " + f.Accepted
			}
			result := run.CreateResultForRule(f.ID).WithLevel(level).WithMessage(sarif.NewTextMessage(msg))
			if f.Reachability != "" {
				result.Properties = sarif.Properties{"reachability": f.Reachability, "symbols": f.Symbols}
			}
			result.
				AddLocation(sarif.NewLocationWithPhysicalLocation(sarif.NewPhysicalLocation().
					WithArtifactLocation(sarif.NewSimpleArtifactLocation(path.Join(specDir, im.Service+".yaml")))))
		}
	}
	log.AddRun(run)
	return log, nil
}

// securitySeverity is GitHub code scanning's numeric severity.
func securitySeverity(sev string) string {
	switch sev {
	case "CRITICAL":
		return "9.5"
	case "HIGH":
		return "8.0"
	case "MEDIUM":
		return "5.5"
	case "LOW":
		return "2.0"
	}
	return "0.0"
}

func orNone(s string) string {
	if s == "" {
		return "no fixed version yet"
	}
	return s
}

// Markdown is the summary's vulnerability section: counts per severity per
// image, then every blocking finding, then accepted ones with the reason.
func Markdown(res *Result, db *DBInfo, exceptions *Exceptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Vulnerabilities (gate: %s)\n\n", res.Gate)
	if res.Source != "" {
		fmt.Fprintf(&b, "Judged by **%s**: %s, data of %s.\n\n", res.Source, res.SourceVersion, res.SourceDate.UTC().Format("2006-01-02 15:04 MST"))
	}
	if res.Source != SourceGoVulnDB && db != nil {
		fmt.Fprintf(&b, "Trivy DB schema %d, updated %s, next update %s.\n\n", db.Version, db.UpdatedAt.Format("2006-01-02 15:04 MST"), db.NextUpdate.Format("2006-01-02 15:04 MST"))
		if db.Stale != "" {
			fmt.Fprintf(&b, "> **Warning**: %s\n\n", db.Stale)
		}
	}
	b.WriteString("| Service | Platform | CRITICAL | HIGH | MEDIUM | LOW | UNKNOWN | Blocking |\n|---|---|---|---|---|---|---|---|\n")
	for _, im := range res.Images {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d |\n", im.Service, im.Platform,
			im.Counts[dbTypes.SeverityCritical.String()], im.Counts[dbTypes.SeverityHigh.String()], im.Counts[dbTypes.SeverityMedium.String()],
			im.Counts[dbTypes.SeverityLow.String()], im.Counts[dbTypes.SeverityUnknown.String()], im.Blocking)
	}
	var goLines []string
	for _, im := range res.Images {
		for _, f := range im.Findings {
			if f.Reachability != "" {
				line := fmt.Sprintf("- %s %s in %s (%s): %s %s: %s", f.Severity, f.ID, im.Service, im.Platform, f.Package, f.Installed, f.Reachability)
				if len(f.Symbols) > 0 {
					line += " (" + strings.Join(f.Symbols, ", ") + ")"
				}
				goLines = append(goLines, line)
			}
		}
	}
	if len(goLines) > 0 {
		b.WriteString("\nGo findings and their reachability (govulncheck on each binary: is a vulnerable symbol linked in):\n\n" + strings.Join(goLines, "\n") + "\n")
	}
	for _, im := range res.Images {
		if len(im.NotCovered) > 0 {
			fmt.Fprintf(&b, "\n> **Not covered**: %s %s's %d OS package(s) were not checked (%s covers Go code only): %s\n",
				im.Service, im.Platform, len(im.NotCovered), res.Source, strings.Join(im.NotCovered, ", "))
		}
	}
	if blocking := res.Blocking(); len(blocking) > 0 {
		b.WriteString("\n**Blocking** (nothing was signed or pushed):\n\n")
		for _, f := range blocking {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	var accepted []string
	for _, im := range res.Images {
		for _, f := range im.Findings {
			if f.Accepted != "" {
				accepted = append(accepted, fmt.Sprintf("- %s %s in %s (%s): %s", f.Severity, f.ID, im.Service, f.Package, f.Accepted))
			}
		}
	}
	if len(accepted) > 0 {
		b.WriteString("\nAccepted by exception:\n\n" + strings.Join(accepted, "\n") + "\n")
	}
	if exceptions != nil && len(exceptions.Problems) > 0 {
		b.WriteString("\nException entries that suppress nothing:\n\n")
		for _, p := range exceptions.Problems {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	return b.String()
}
