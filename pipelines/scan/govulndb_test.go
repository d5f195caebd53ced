package scan

import (
	"context"
	"strings"
	"testing"
	"time"

	trivydb "github.com/aquasecurity/trivy-db/pkg/db"
	dbTypes "github.com/aquasecurity/trivy-db/pkg/types"
)

// The pinned golang.org/x/vulndb, fetched through the Go module proxy,
// becomes a Trivy DB that OpenDB accepts as --vuln-db and that holds the
// Go advisories: golang.org/x/text v0.3.8 fixed CVE-2022-32149
// (GO-2022-1059), so an earlier version is vulnerable.
func TestBuildGoVulnDBFromTheModuleProxy(t *testing.T) {
	ctx := context.Background()
	out := t.TempDir()
	info, err := BuildGoVulnDB(ctx, out, "")
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != GoVulnDBVersion || info.Time.IsZero() || info.Time.After(time.Now()) {
		t.Fatalf("%+v", info)
	}
	db, err := OpenDB(ctx, DBOptions{Dir: out, MaxAge: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDB()
	if !db.UpdatedAt.Equal(info.Time) {
		t.Errorf("UpdatedAt %s, want the module version's time %s", db.UpdatedAt, info.Time)
	}
	advs, err := trivydb.Config{}.GetAdvisories("go::The Go Vulnerability Database", "golang.org/x/text")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	found := false
	for _, a := range advs {
		ids = append(ids, a.VulnerabilityID)
		if a.VulnerabilityID == "CVE-2022-32149" || a.VulnerabilityID == "GO-2022-1059" {
			found = true
			if !strings.Contains(strings.Join(append(a.PatchedVersions, a.VulnerableVersions...), " "), "0.3.8") {
				t.Errorf("%s: patched %v vulnerable %v", a.VulnerabilityID, a.PatchedVersions, a.VulnerableVersions)
			}
		}
	}
	if !found {
		t.Fatalf("golang.org/x/text's advisories do not include GO-2022-1059/CVE-2022-32149: %v", ids)
	}
	// The details were folded into the record Trivy's detectors read.
	var vuln dbTypes.Vulnerability
	for _, id := range []string{"CVE-2022-32149", "GO-2022-1059"} {
		if v, err := (trivydb.Config{}).GetVulnerability(id); err == nil && v.Description != "" {
			vuln = v
			break
		}
	}
	if vuln.Description == "" {
		t.Errorf("no vulnerability record with a description for GO-2022-1059/CVE-2022-32149")
	}
}
