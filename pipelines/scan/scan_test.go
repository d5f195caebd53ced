package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aquasecurity/trivy/pkg/types"
	"github.com/owenrumney/go-sarif/v2/sarif"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/internal/imagetest"
	"github.com/darktower/delivery/pipelines/sbom"
)

var (
	docs      []*sbom.Document
	setupOnce sync.Once
	setupErr  error
)

// The four services, built once for linux/amd64 on the Debian-like test
// base, with their SBOMs: what the scan stage reads.
func setup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		dir, err := os.MkdirTemp("", "darktower-scan-test-")
		if err != nil {
			setupErr = err
			return
		}
		defer os.RemoveAll(dir)
		amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
		images := imagetest.Build(t, "../..", nil, amd64, imagetest.DebianBase(t, dir, amd64))
		res, err := sbom.Generate(context.Background(), sbom.Options{Images: images, Out: dir, Created: imagetest.Epoch})
		if err != nil {
			setupErr = err
			return
		}
		docs = res.Documents
	})
	if setupErr != nil || docs == nil {
		t.Fatalf("building the services and their SBOMs failed: %v", setupErr)
	}
}

// onlyIn finds a Go module that exactly one service links, other than
// the one named by skip: the fixture marks it vulnerable.
func onlyIn(t *testing.T, skip string) (service string, p sbom.Package) {
	t.Helper()
	setup(t)
	users := map[string][]string{}
	pkgs := map[string]sbom.Package{}
	for _, d := range docs {
		for _, p := range d.Packages {
			if p.Type == "go-module" && release.MatchString(p.Version) {
				users[p.Name] = append(users[p.Name], d.Service)
				pkgs[p.Name] = p
			}
		}
	}
	for _, d := range docs {
		if d.Service == skip {
			continue
		}
		for _, p := range d.Packages {
			if u := users[p.Name]; len(u) == 1 && u[0] == d.Service {
				return d.Service, p
			}
		}
	}
	t.Fatal("no Go module is used by exactly one service")
	return "", sbom.Package{}
}

var release = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)

// advisory marks a module vulnerable up to the installed version, fixed
// one patch release later.
func advisory(id, severity string, p sbom.Package) vulndbtest.Advisory {
	m := release.FindStringSubmatch(p.Version)
	patch, _ := strconv.Atoi(m[3])
	return vulndbtest.Advisory{ID: id, Severity: severity, Title: "fixture " + severity + " in " + p.Name,
		Package: p.Name, Vulnerable: "<= " + strings.TrimPrefix(p.Version, "v"), Fixed: fmt.Sprintf("%s.%s.%d", m[1], m[2], patch+1)}
}

// scanWith writes a fixture DB, opens it, and scans the services.
func scanWith(t *testing.T, threshold string, ex *Exceptions, advisories ...vulndbtest.Advisory) (*Result, error) {
	t.Helper()
	dir := t.TempDir()
	if err := vulndbtest.Write(dir, time.Now().Add(-time.Hour), advisories...); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(context.Background(), DBOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer CloseDB()
	return Scan(context.Background(), Options{Documents: docs, Threshold: threshold, Exceptions: ex})
}

func exceptions(t *testing.T, yaml string) *Exceptions {
	t.Helper()
	path := filepath.Join(t.TempDir(), ExceptionsFile)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ex, err := LoadExceptions(path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestCriticalModuleBlocksItsServiceNamingTheCVE(t *testing.T) {
	service, p := onlyIn(t, "")
	res, err := scanWith(t, "", nil, advisory("CVE-2099-0001", "CRITICAL", p))
	var blocked *BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("want the gate to block, got %v", err)
	}
	if len(blocked.Findings) != 1 {
		t.Fatalf("want one blocking finding, got %v", blocked.Findings)
	}
	msg := err.Error()
	adv := advisory("CVE-2099-0001", "CRITICAL", p)
	for _, want := range []string{"CVE-2099-0001", service, p.Name, strings.TrimPrefix(p.Version, "v") + " installed", "fixed in " + adv.Fixed, ExceptionsFile} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal does not name %q:\n%s", want, msg)
		}
	}
	for _, im := range res.Images {
		if (im.Blocking > 0) != (im.Service == service) {
			t.Errorf("%s: %d blocking", im.Service, im.Blocking)
		}
	}
	t.Logf("blocked: %s", msg)
}

func TestExceptionsAcceptOnlyWhileValidAndInScope(t *testing.T) {
	service, p := onlyIn(t, "")
	adv := advisory("CVE-2099-0002", "CRITICAL", p)
	tomorrow := time.Now().AddDate(0, 0, 1).Format(time.DateOnly)
	yesterday := time.Now().AddDate(0, 0, -1).Format(time.DateOnly)

	ex := exceptions(t, "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: not reachable from the service's handlers\n    expires: "+tomorrow+"\n    services: ["+service+"]\n    packages: ["+p.Name+"]\n")
	res, err := scanWith(t, "", ex, adv)
	if err != nil {
		t.Fatalf("an in-scope, unexpired exception must accept the finding: %v", err)
	}
	if md := Markdown(res, nil, ex); !strings.Contains(md, "not reachable from the service's handlers") {
		t.Errorf("the summary does not show the accepted reason:\n%s", md)
	}

	for name, yaml := range map[string]string{
		"expired":          "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: r\n    expires: " + yesterday + "\n",
		"other service":    "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: r\n    expires: " + tomorrow + "\n    services: [not-" + service + "]\n",
		"other package":    "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: r\n    expires: " + tomorrow + "\n    packages: [example.com/other]\n",
		"no reason":        "vulnerabilities:\n  - id: CVE-2099-0002\n    expires: " + tomorrow + "\n",
		"unknown field":    "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: r\n    expires: " + tomorrow + "\n    severity: LOW\n",
		"unparseable date": "vulnerabilities:\n  - id: CVE-2099-0002\n    reason: r\n    expires: soon\n",
	} {
		t.Run(name, func(t *testing.T) {
			ex := exceptions(t, yaml)
			_, err := scanWith(t, "", ex, adv)
			var blocked *BlockedError
			if !errors.As(err, &blocked) {
				t.Fatalf("want still blocked, got %v", err)
			}
			inScope := name == "other service" || name == "other package"
			if inScope != (len(ex.Problems) == 0) {
				t.Errorf("problems reported: %v", ex.Problems)
			}
			for _, p := range ex.Problems {
				t.Logf("reported: %s", p)
			}
		})
	}
}

func TestHighPassesTheDefaultGateAndBlocksAtHigh(t *testing.T) {
	_, p := onlyIn(t, "")
	adv := advisory("CVE-2099-0003", "HIGH", p)
	res, err := scanWith(t, "", nil, adv)
	if err != nil {
		t.Fatalf("HIGH must pass the default (CRITICAL) gate: %v", err)
	}
	high := 0
	for _, im := range res.Images {
		high += im.Counts["HIGH"]
	}
	if high != 1 {
		t.Errorf("HIGH findings counted %d, want 1", high)
	}
	if _, err := scanWith(t, "HIGH", nil, adv); !errors.As(err, new(*BlockedError)) {
		t.Fatalf("want blocked at --severity HIGH, got %v", err)
	}
	if _, err := ParseThreshold("SEVERE"); err == nil || !strings.Contains(err.Error(), "LOW, MEDIUM, HIGH, CRITICAL") {
		t.Errorf("a bad threshold must be refused with the choices, got %v", err)
	}
}

// The base's Debian packages are matched with Debian's advisories, by
// source package.
func TestDebianPackagesAreMatchedBySourcePackage(t *testing.T) {
	setup(t)
	res, err := scanWith(t, "", nil,
		vulndbtest.Advisory{ID: "CVE-2099-0004", Severity: "MEDIUM", Debian: true, Package: "openssl", Fixed: "3.0.11-1~deb12u3"},
		vulndbtest.Advisory{ID: "CVE-2099-0005", Severity: "LOW", Debian: true, Package: "tzdata", Fixed: "2024a-0+deb12u1"}) // already fixed
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 5 {
		t.Fatalf("%d images scanned, want the 5 of images/ (the four services and the flag gateway)", len(res.Images))
	}
	for _, im := range res.Images {
		if len(im.Findings) != 1 || im.Findings[0].ID != "CVE-2099-0004" || im.Findings[0].Package != "libssl3" || im.Findings[0].Class != "os-pkgs" {
			t.Errorf("%s: findings %+v, want CVE-2099-0004 in libssl3 only", im.Service, im.Findings)
		}
	}
}

func TestCleanServicesPassAndReportsAreValid(t *testing.T) {
	_, p := onlyIn(t, "")
	res, err := scanWith(t, "", nil, advisory("CVE-2099-0006", "LOW", p))
	if err != nil {
		t.Fatalf("the services must pass: %v", err)
	}
	out := t.TempDir()
	reps, err := WriteReports(out, res)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, reps.SARIF))
	if err != nil {
		t.Fatal(err)
	}
	log, err := sarif.FromBytes(raw)
	if err != nil || log.Version != "2.1.0" || len(log.Runs) != 1 {
		t.Fatalf("SARIF: %v, version %q", err, log.Version)
	}
	if n := len(log.Runs[0].Results); n != 1 || *log.Runs[0].Results[0].RuleID != "CVE-2099-0006" {
		t.Errorf("SARIF results: %d, want the one LOW finding", n)
	}
	if len(reps.Trivy) != len(docs) {
		t.Fatalf("%d Trivy reports for %d images", len(reps.Trivy), len(docs))
	}
	for _, name := range reps.Trivy {
		raw, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		var rep types.Report
		if err := json.Unmarshal(raw, &rep); err != nil || rep.SchemaVersion != 2 || len(rep.Results) != 2 {
			t.Errorf("%s: %v, schema %d, %d results", name, err, rep.SchemaVersion, len(rep.Results))
		}
	}
}

func TestMissingOrBadDBFailsClosedWithInstructions(t *testing.T) {
	for name, setup := range map[string]func(dir string){
		"empty directory": func(string) {},
		"no metadata": func(dir string) {
			if err := vulndbtest.Write(dir, time.Now()); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(dir, "metadata.json"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			setup(dir)
			_, err := OpenDB(context.Background(), DBOptions{Dir: dir})
			if !errors.Is(err, ErrNoDB) || !strings.Contains(err.Error(), "--vuln-db") {
				t.Fatalf("want ErrNoDB with instructions, got %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestOldDBIsReportedStale(t *testing.T) {
	dir := t.TempDir()
	if err := vulndbtest.Write(dir, time.Now().AddDate(0, 0, -10)); err != nil {
		t.Fatal(err)
	}
	info, err := OpenDB(context.Background(), DBOptions{Dir: dir, MaxAge: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	CloseDB()
	if info.Stale == "" || !strings.Contains(Markdown(&Result{Threshold: "CRITICAL"}, info, nil), "Warning") {
		t.Errorf("a 10-day-old DB with a 7-day limit must be reported stale: %+v", info)
	}
}
