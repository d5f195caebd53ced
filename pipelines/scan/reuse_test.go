package scan

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
)

// scanCached scans the services against the DB in dbDir with the findings
// cache in cacheDir, and writes the reports to out.
func scanCached(t *testing.T, dbDir, cacheDir, threshold string, ex *Exceptions, out string) (*Result, error, string) {
	t.Helper()
	info, err := OpenDB(context.Background(), DBOptions{Dir: dbDir})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDB()
	var progress bytes.Buffer
	res, err := Scan(context.Background(), Options{Documents: docs, Threshold: threshold, Exceptions: ex, Progress: &progress,
		SourceVersion: "fixture", SourceDate: info.UpdatedAt, DataKey: DBIdentity(info), CacheDir: cacheDir})
	if res != nil {
		if _, werr := WriteReports(out, res); werr != nil {
			t.Fatal(werr)
		}
	}
	return res, err, progress.String()
}

// An unchanged image under unchanged data is not scanned again: its raw
// findings come from the cache, and the reports are the same bytes. A
// changed exception or threshold judges them again without a scan; a new
// DB scans again.
func TestFindingsAreReusedAndOnlyTheJudgementIsRedone(t *testing.T) {
	service, p := onlyIn(t, "")
	adv := advisory("CVE-2099-0101", "CRITICAL", p)
	db1 := t.TempDir()
	if err := vulndbtest.Write(db1, time.Now().Add(-time.Hour), adv); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	fresh, outFresh := t.TempDir(), t.TempDir()

	// Without a cache, and with an empty one: scanned.
	if _, err, said := scanCached(t, db1, "", "", nil, fresh); !isBlocked(err) || strings.Contains(said, "reused") {
		t.Fatalf("no cache: want a blocking scan, got %v:\n%s", err, said)
	}
	res, err, said := scanCached(t, db1, cache, "", nil, outFresh)
	if !isBlocked(err) || res.Reused != 0 || strings.Contains(said, "findings reused") {
		t.Fatalf("first cached scan: reused %d, %v:\n%s", res.Reused, err, said)
	}

	// Nothing changed: every image's findings reused, the same verdict and
	// byte-identical reports.
	outReused := t.TempDir()
	res, err, said = scanCached(t, db1, cache, "", nil, outReused)
	if !isBlocked(err) || res.Reused != len(docs) || strings.Count(said, "scan: findings reused for ") != len(docs) {
		t.Fatalf("unchanged: want %d reused and still blocked, got %d, %v:\n%s", len(docs), res.Reused, err, said)
	}
	for _, name := range []string{"trivy", "sarif"} {
		a, b := reportFiles(t, fresh, name), reportFiles(t, outReused, name)
		if len(a) == 0 || !equalFiles(a, b) {
			t.Errorf("%s reports differ between the scan without a cache and the reused findings", name)
		}
	}

	// A changed exception: judged again from the reused findings, and the
	// finding is accepted.
	tomorrow := time.Now().AddDate(0, 0, 1).Format(time.DateOnly)
	ex := exceptions(t, "vulnerabilities:\n  - id: CVE-2099-0101\n    reason: fixture accepted\n    expires: "+tomorrow+"\n    services: ["+service+"]\n")
	res, err, said = scanCached(t, db1, cache, "", ex, t.TempDir())
	if err != nil || res.Reused != len(docs) {
		t.Fatalf("a new exception: want the finding accepted from %d reused images, got %d reused, %v:\n%s", len(docs), res.Reused, err, said)
	}
	if f := findingIn(res, service, "CVE-2099-0101"); f == nil || !strings.Contains(f.Accepted, "fixture accepted") || f.Blocking {
		t.Errorf("the reused finding was not judged again: %+v", f)
	}
	// A changed threshold: the same.
	res, err, said = scanCached(t, db1, cache, "LOW", nil, t.TempDir())
	if !isBlocked(err) || res.Reused != len(docs) || res.Threshold != "LOW" {
		t.Fatalf("threshold LOW: got %d reused, threshold %s, %v:\n%s", res.Reused, res.Threshold, err, said)
	}

	// A new DB (another update, another advisory): scanned again, and the
	// new finding is there.
	other := advisory("CVE-2099-0102", "HIGH", p)
	db2 := t.TempDir()
	if err := vulndbtest.Write(db2, time.Now().Add(-time.Minute), adv, other); err != nil {
		t.Fatal(err)
	}
	res, err, said = scanCached(t, db2, cache, "", nil, t.TempDir())
	if !isBlocked(err) || res.Reused != 0 || strings.Contains(said, "findings reused") {
		t.Fatalf("a new DB: want every image scanned again, got %d reused, %v:\n%s", res.Reused, err, said)
	}
	if findingIn(res, service, "CVE-2099-0102") == nil {
		t.Errorf("the new DB's advisory was not found: the findings were not scanned again")
	}
	// And the old DB's entries are still there for it.
	if res, _, _ = scanCached(t, db1, cache, "", nil, t.TempDir()); res.Reused != len(docs) {
		t.Errorf("back on the first DB: %d reused, want %d", res.Reused, len(docs))
	}
}

func isBlocked(err error) bool {
	var b *BlockedError
	return errors.As(err, &b)
}

func findingIn(res *Result, service, id string) *Finding {
	for _, im := range res.Images {
		for _, f := range im.Findings {
			if im.Service == service && f.ID == id {
				return f
			}
		}
	}
	return nil
}

// reportFiles reads the scan reports whose names contain kind.
func reportFiles(t *testing.T, out, kind string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(filepath.Join(out, Dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), kind) {
			raw, err := os.ReadFile(filepath.Join(out, Dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = raw
		}
	}
	return files
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
