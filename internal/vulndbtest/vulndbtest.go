// Package vulndbtest writes small Trivy vulnerability DBs with trivy-db's
// own Go API, for offline tests of the scan stage and the benchmark
// (Trivy's DB cannot be downloaded here).
package vulndbtest

import (
	"time"

	bolt "go.etcd.io/bbolt"

	trivydb "github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	dbTypes "github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/bucket"
)

// Advisory is one fixture vulnerability.
type Advisory struct {
	ID       string
	Severity string // CRITICAL, HIGH, …
	Title    string
	// Go: Package is the module path; Vulnerable a constraint ("<= 1.2.3"),
	// Fixed the first fixed version.
	// Debian: Package is the source package; Fixed its fixed version.
	Debian     bool
	Package    string
	Vulnerable string
	Fixed      string
}

// Write creates dir/trivy.db and dir/metadata.json (updated at updated,
// next update a day later) holding the advisories.
func Write(dir string, updated time.Time, advisories ...Advisory) error {
	if err := trivydb.Init(dir); err != nil {
		return err
	}
	defer trivydb.Close()
	dbc := trivydb.Config{}
	goSource := dbTypes.DataSource{ID: "ghsa", Name: "GitHub Security Advisory Go", URL: "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Ago"}
	goBucket, err := bucket.NewGo(goSource)
	if err != nil {
		return err
	}
	err = dbc.BatchUpdate(func(tx *bolt.Tx) error {
		for _, a := range advisories {
			var err error
			if a.Debian {
				err = dbc.PutAdvisory(tx, []string{bucket.NewDebian("12").Name(), a.Package}, a.ID, dbTypes.Advisory{FixedVersion: a.Fixed})
			} else {
				if err = dbc.PutDataSource(tx, goBucket.Name(), goSource); err == nil {
					err = dbc.PutAdvisory(tx, []string{goBucket.Name(), a.Package}, a.ID, dbTypes.Advisory{
						VulnerableVersions: []string{a.Vulnerable}, PatchedVersions: []string{a.Fixed}})
				}
			}
			if err != nil {
				return err
			}
			sev, err := dbTypes.NewSeverity(a.Severity)
			if err != nil {
				return err
			}
			source := dbTypes.SourceID("ghsa")
			if a.Debian {
				source = "debian"
			}
			if err := dbc.PutVulnerability(tx, a.ID, dbTypes.Vulnerability{Title: a.Title, Severity: a.Severity,
				VendorSeverity: dbTypes.VendorSeverity{source: sev}, References: []string{"https://example.invalid/" + a.ID}}); err != nil {
				return err
			}
			if err := dbc.PutVulnerabilityID(tx, a.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return metadata.NewClient(dir).Update(metadata.Metadata{Version: trivydb.SchemaVersion,
		UpdatedAt: updated, NextUpdate: updated.Add(24 * time.Hour), DownloadedAt: updated})
}
