package scan

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	trivydb "github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/govulndb"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/vulnerability"
	bolt "go.etcd.io/bbolt"
)

// The Go vulnerability database as a Go module: its data/osv holds every
// Go advisory as OSV JSON, and the Go module proxy (which air-gapped
// organisations commonly mirror) serves it.
const (
	GoVulnDBModule  = "golang.org/x/vulndb"
	GoVulnDBVersion = "v0.0.0-20261105234957-e22db6528018" // pinned; moved by hand for now
)

// GoVulnDBInfo says which module version a built DB holds.
type GoVulnDBInfo struct {
	Module, Version string
	Time            time.Time // the version's commit time: the DB's UpdatedAt
	Dir             string    // the built DB (trivy.db, metadata.json): a --vuln-db directory
}

// BuildGoVulnDB fetches golang.org/x/vulndb at version through the Go
// module proxy (the go command's GOPROXY) and turns its OSV advisories
// into a Trivy DB in out with trivy-db's own govulndb updater. Only the
// Go standard library's and golang.org/x/ modules' advisories are kept by
// that updater (Trivy takes the others from GitHub's advisories); the Go
// DB carries no severity, so its findings are UNKNOWN.
func BuildGoVulnDB(ctx context.Context, out, version string) (*GoVulnDBInfo, error) {
	if version == "" {
		version = GoVulnDBVersion
	}
	dir, t, err := fetchGoVulnDB(ctx, version)
	if err != nil {
		return nil, err
	}
	// The updater reads ROOT/govulndb/data/osv.
	root, err := os.MkdirTemp("", "darktower-govulndb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	if err := os.Symlink(dir, filepath.Join(root, "govulndb")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	if err := trivydb.Init(out); err != nil {
		return nil, err
	}
	if err := insertGoVulnDB(root); err != nil {
		trivydb.Close()
		return nil, fmt.Errorf("building the Trivy DB from %s@%s: %w", GoVulnDBModule, version, err)
	}
	if err := trivydb.Close(); err != nil {
		return nil, err
	}
	if err := metadata.NewClient(out).Update(metadata.Metadata{Version: trivydb.SchemaVersion,
		UpdatedAt: t, NextUpdate: t.Add(24 * time.Hour), DownloadedAt: time.Now().UTC()}); err != nil {
		return nil, err
	}
	return &GoVulnDBInfo{Module: GoVulnDBModule, Version: version, Time: t, Dir: out}, nil
}

// insertGoVulnDB fills the open DB as trivy-db's build does for one
// source: the govulndb updater inserts the advisories, then each
// vulnerability's details are folded into the record Trivy's detectors
// read and the build-time buckets are dropped. trivy-db's vulndb package
// would do this too, but it registers every source, and its GHSA source
// runs `go list std` in an init function: in every start of this CLI
// (a quarter of a second, and a panic where no suitable go command is on
// the PATH).
func insertGoVulnDB(root string) error {
	if err := govulndb.NewVulnSrc().Update(root); err != nil {
		return err
	}
	dbc := trivydb.Config{}
	vulns := vulnerability.New(dbc)
	err := dbc.ForEachVulnerabilityID(func(tx *bolt.Tx, id string) error {
		details := vulns.GetDetails(id)
		if vulns.IsRejected(details) {
			return nil
		}
		if err := dbc.SaveAdvisoryDetails(tx, id); err != nil {
			return fmt.Errorf("%s: saving its advisories: %w", id, err)
		}
		if len(details) == 0 {
			return nil
		}
		return dbc.PutVulnerability(tx, id, vulns.Normalize(id, details))
	})
	if err != nil {
		return err
	}
	for _, drop := range []func() error{dbc.DeleteVulnerabilityIDBucket, dbc.DeleteVulnerabilityDetailBucket, dbc.DeleteAdvisoryDetailBucket} {
		if err := drop(); err != nil {
			return err
		}
	}
	return nil
}

// execGo is the go command run outside any module (the vulndb module is
// fetched, not built).
func execGo(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = os.TempDir()
	return cmd
}
