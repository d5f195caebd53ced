package scan

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aquasecurity/trivy/pkg/types"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/sbom"
)

// Two throwaway programs on golang.org/x/text v0.3.7, which GO-2022-1059
// (CVE-2022-32149, fixed in v0.3.8) affects through
// language.ParseAcceptLanguage: one calls it, one imports the package and
// calls only language.Und.IsRoot. govulncheck, against the pinned vulndb
// laid out by PrepareGoVulnData, finds the advisory in both and the
// symbol only in the first.
func TestCheckBinaryTellsReachableFromUnreachable(t *testing.T) {
	ctx := context.Background()
	data, err := PrepareGoVulnData(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if data.Time.IsZero() {
		t.Fatalf("no date: %+v", data)
	}
	for _, c := range []struct {
		name, body string
		want       string
	}{
		{"calls", `fmt.Println(language.ParseAcceptLanguage(os.Args[0]))`, Reachable},
		{"imports", `fmt.Println(language.Und.IsRoot(), len(os.Args))`, Unreachable},
	} {
		bin := goProgram(t, c.name, c.body)
		vulns, err := CheckBinary(ctx, data, bin)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(vulns, func(v *GoVuln) bool { return v.ID == "GO-2022-1059" && v.Module == "golang.org/x/text" })
		if i < 0 {
			t.Fatalf("%s: no GO-2022-1059 for golang.org/x/text in %d findings", c.name, len(vulns))
		}
		v := vulns[i]
		if v.Reachability != c.want || v.Version != "v0.3.7" || v.Fixed != "v0.3.8" || !v.Names("CVE-2022-32149") {
			t.Errorf("%s: %+v, want %s", c.name, v, c.want)
		}
		if c.want == Reachable && !slices.Contains(v.Symbols, "golang.org/x/text/language.ParseAcceptLanguage") {
			t.Errorf("%s: symbols %v lack language.ParseAcceptLanguage", c.name, v.Symbols)
		}
		t.Logf("%s: %s %s %v", c.name, v.ID, v.Reachability, v.Symbols)
	}
}

// goProgram builds a main module requiring golang.org/x/text v0.3.7 (from
// the Go module proxy) whose main runs body, linked as build-all links
// its symbol-table twins (-w: no DWARF, the symbol table kept).
func goProgram(t *testing.T, name, body string) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() {\n\t" + body + "\n}\n"
	for f, s := range map[string]string{"go.mod": "module example.com/" + name + "\n\ngo 1.27\n\nrequire golang.org/x/text v0.3.7\n", "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-ldflags=-w", "-o", name}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	return filepath.Join(dir, name)
}

// goTextDocs are the SBOMs of the two programs' images on a Debian base:
// golang.org/x/text v0.3.7 and one Debian package; check runs govulncheck
// on the matching binary.
func goTextDocs(t *testing.T) ([]*sbom.Document, func(context.Context, string, string) ([]*GoVuln, error), *GoVulnData) {
	t.Helper()
	ctx := context.Background()
	data, err := PrepareGoVulnData(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	bins := map[string]string{
		"calls":   goProgram(t, "calls", `fmt.Println(language.ParseAcceptLanguage(os.Args[0]))`),
		"imports": goProgram(t, "imports", `fmt.Println(language.Und.IsRoot(), len(os.Args))`),
	}
	var docs []*sbom.Document
	for _, s := range []string{"calls", "imports"} {
		docs = append(docs, &sbom.Document{Service: s, Platform: "linux/amd64", ImageDigest: "sha256:" + strings.Repeat("0", 64),
			OS: &sbom.OS{ID: "debian", VersionID: "12"}, Packages: []sbom.Package{
				{Name: "golang.org/x/text", Version: "v0.3.7", Type: "go-module", PURL: "pkg:golang/golang.org/x/text@v0.3.7"},
				{Name: "base-files", Version: "12.4+deb12u5", Type: "deb", PURL: "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12"},
			}})
	}
	check := func(ctx context.Context, service, _ string) ([]*GoVuln, error) {
		return CheckBinary(ctx, data, bins[service])
	}
	return docs, check, data
}

func findingOf(t *testing.T, res *Result, service, id string) *Finding {
	t.Helper()
	for _, im := range res.Images {
		for _, f := range im.Findings {
			if im.Service == service && f.ID == id {
				return f
			}
		}
	}
	t.Fatalf("%s has no finding %s", service, id)
	return nil
}

// With Trivy's DB judging, each Go finding carries govulncheck's
// reachability, matched by alias (Trivy names the CVE, the Go database
// GO-2022-1059); one the Go database lacks is "unknown", and without
// govulncheck every one says why it was not checked. The severity gate
// is unchanged: a reachable HIGH does not block at CRITICAL.
func TestTrivyFindingsCarryReachability(t *testing.T) {
	docs, check, data := goTextDocs(t)
	dir := t.TempDir()
	if err := vulndbtest.Write(dir, time.Now().Add(-time.Hour),
		vulndbtest.Advisory{ID: "CVE-2022-32149", Severity: "HIGH", Title: "x/text ParseAcceptLanguage", Package: "golang.org/x/text", Vulnerable: "< 0.3.8", Fixed: "0.3.8"},
		vulndbtest.Advisory{ID: "CVE-2099-0001", Severity: "LOW", Title: "fixture advisory the Go database lacks", Package: "golang.org/x/text", Vulnerable: "<= 0.3.7", Fixed: "0.3.8"},
	); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(context.Background(), DBOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer CloseDB()
	res, err := Scan(context.Background(), Options{Documents: docs, Source: SourceTrivy, GoCheck: check})
	if err != nil {
		t.Fatal(err)
	}
	if f := findingOf(t, res, "calls", "CVE-2022-32149"); f.Reachability != Reachable || !slices.Contains(f.Symbols, "golang.org/x/text/language.ParseAcceptLanguage") || f.Blocking {
		t.Errorf("calls: %+v", f)
	}
	if f := findingOf(t, res, "imports", "CVE-2022-32149"); f.Reachability != Unreachable || len(f.Symbols) != 0 {
		t.Errorf("imports: %+v", f)
	}
	if f := findingOf(t, res, "calls", "CVE-2099-0001"); f.Reachability != "unknown: "+data.Module+"@"+data.Version+" has no such advisory for this module version" {
		t.Errorf("a finding the Go database lacks: %q", f.Reachability)
	}
	if len(res.Images[0].NotCovered) != 0 {
		t.Errorf("Trivy covers the Debian packages: %v", res.Images[0].NotCovered)
	}
	noProxy := func(context.Context, string, string) ([]*GoVuln, error) { return nil, errors.New("no module proxy") }
	res, err = Scan(context.Background(), Options{Documents: docs, Source: SourceTrivy, GoCheck: noProxy})
	if err != nil {
		t.Fatal(err)
	}
	if f := findingOf(t, res, "calls", "CVE-2022-32149"); f.Reachability != "not checked: no module proxy" {
		t.Errorf("without govulncheck: %q", f.Reachability)
	}
}

// With the Go database judging, govulncheck's findings are the Go
// findings (UNKNOWN severity), only a reachable one blocks, naming the
// advisory and the symbol, and the Debian package is named as not
// covered in the progress, the summary, Trivy's report and the SARIF log.
func TestGoVulnDBSourceGatesOnReachability(t *testing.T) {
	docs, check, data := goTextDocs(t)
	var progress strings.Builder
	res, err := Scan(context.Background(), Options{Documents: docs, Source: SourceGoVulnDB, SourceVersion: data.Module + "@" + data.Version,
		SourceDate: data.Time, GoCheck: check, GoData: data, Progress: &progress})
	var blocked *BlockedError
	if !errors.As(err, &blocked) || len(blocked.Findings) != 1 ||
		!strings.Contains(blocked.Findings[0], "GO-2022-1059 in calls (linux/amd64): golang.org/x/text 0.3.7 installed, fixed in 0.3.8; reachable: golang.org/x/text/language.ParseAcceptLanguage") {
		t.Fatalf("err = %v, want calls blocked by GO-2022-1059 alone", err)
	}
	if f := findingOf(t, res, "imports", "GO-2022-1059"); f.Blocking || f.Reachability != Unreachable || f.Severity != "UNKNOWN" {
		t.Errorf("imports: %+v", f)
	}
	for _, im := range res.Images {
		if !slices.Equal(im.NotCovered, []string{"base-files 12.4+deb12u5"}) {
			t.Errorf("%s: not covered %v", im.Service, im.NotCovered)
		}
		if rep := trivyReport(im); len(rep.Results) != 1 || rep.Results[0].Class != types.ClassLangPkg {
			t.Errorf("%s: Trivy's report has a result for OS packages nothing judged: %+v", im.Service, rep.Results)
		}
	}
	md := Markdown(res, nil, nil)
	for _, want := range []string{"Judged by **go-vulndb**: " + data.Module + "@" + data.Version, "**Not covered**: calls linux/amd64's 1 OS package(s)",
		"GO-2022-1059 in imports (linux/amd64): golang.org/x/text 0.3.7: unreachable"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(progress.String(), "1 OS package(s) NOT COVERED by go-vulndb: base-files 12.4+deb12u5") {
		t.Errorf("progress:\n%s", progress.String())
	}
	// An exception may name the advisory by its CVE, as Trivy would.
	tomorrow := time.Now().AddDate(0, 0, 1).Format(time.DateOnly)
	ex := exceptions(t, "vulnerabilities:\n  - id: CVE-2022-32149\n    reason: input is a fixed constant\n    expires: "+tomorrow+"\n    services: [calls]\n")
	if _, err := Scan(context.Background(), Options{Documents: docs, Source: SourceGoVulnDB, GoCheck: check, GoData: data, Exceptions: ex}); err != nil {
		t.Errorf("an exception naming the CVE alias must accept GO-2022-1059: %v", err)
	}
	log, err := SARIF(res)
	if err != nil {
		t.Fatal(err)
	}
	props := log.Runs[0].Properties
	if nc, _ := props["notCovered"].(map[string][]string); props["source"] != SourceGoVulnDB || len(nc["calls linux/amd64"]) != 1 || log.Runs[0].Tool.Driver.Name != "govulncheck" {
		t.Errorf("SARIF run: %s %v", log.Runs[0].Tool.Driver.Name, props)
	}
	// Each finding is located at its image's spec, in the set's directory.
	locations := func(r *Result) []string {
		log, err := SARIF(r)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, result := range log.Runs[0].Results {
			for _, l := range result.Locations {
				out = append(out, *l.PhysicalLocation.ArtifactLocation.URI)
			}
		}
		return out
	}
	if got := locations(res); len(got) == 0 || got[0] != "images/calls.yaml" {
		t.Errorf("SARIF locations %v, want images/calls.yaml", got)
	}
	res.SpecDir = "images/platform"
	if got := locations(res); len(got) == 0 || got[0] != "images/platform/calls.yaml" {
		t.Errorf("SARIF locations of another spec set %v, want images/platform/calls.yaml", got)
	}
}
