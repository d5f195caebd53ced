package scan

import "fmt"

// The vulnerability sources (--vuln-source).
const (
	// SourceAuto: Trivy's DB when it can be had (--vuln-db, the cache or
	// a download), else the Go vulnerability database.
	SourceAuto = "auto"
	// SourceTrivy: Trivy's DB and detectors; OS packages and Go modules,
	// gated on severity.
	SourceTrivy = "trivy"
	// SourceGoVulnDB: golang.org/x/vulndb (pinned, through the Go module
	// proxy) judged by govulncheck; Go modules and the standard library
	// only, gated on reachability.
	SourceGoVulnDB = "go-vulndb"
)

// ParseSource checks a --vuln-source value ("" = auto).
func ParseSource(s string) (string, error) {
	switch s {
	case "":
		return SourceAuto, nil
	case SourceAuto, SourceTrivy, SourceGoVulnDB:
		return s, nil
	}
	return "", fmt.Errorf("--vuln-source %q: expected %s, %s or %s", s, SourceAuto, SourceTrivy, SourceGoVulnDB)
}
