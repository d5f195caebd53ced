package scan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	trivydb "github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	"github.com/aquasecurity/trivy/pkg/db"
	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
	"github.com/google/go-containerregistry/pkg/name"
)

// DBOptions say where the vulnerability database comes from.
type DBOptions struct {
	// Dir is a prepared DB (--vuln-db): a directory holding trivy.db and
	// metadata.json, or Trivy's cache layout with them under db/. Used as
	// is, never downloaded: the air-gapped form.
	Dir string
	// CacheDir keeps the downloaded DB (under db/) when Dir is empty.
	CacheDir string
	// Repository is where the DB is downloaded from ("" = Trivy's
	// defaults, ghcr.io then mirror.gcr.io), like trivy --db-repository.
	Repository string
	// MaxAge: a DB last updated longer ago than this is reported stale.
	MaxAge time.Duration
	// Now is the clock (time.Now when zero).
	Now time.Time
}

// DBInfo describes the DB a scan used.
type DBInfo struct {
	Dir        string    `json:"dir"`
	Version    int       `json:"schemaVersion"`
	UpdatedAt  time.Time `json:"updatedAt"`
	NextUpdate time.Time `json:"nextUpdate"`
	Downloaded bool      `json:"downloaded"` // fetched by this run
	Stale      string    `json:"stale,omitempty"`
}

// ErrNoDB is returned (wrapped) when no usable DB is available: the scan
// fails closed.
var ErrNoDB = errors.New("no vulnerability database")

// noDBAdvice says how to supply a DB.
const noDBAdvice = "online, let the pipeline download Trivy's DB (it needs ghcr.io/aquasecurity/trivy-db); " +
	"air-gapped, prepare one where the registry is reachable (`trivy image --download-db-only --cache-dir DIR`) and pass --vuln-db DIR, " +
	"or judge Go code only with --vuln-source go-vulndb (the Go vulnerability database through the Go module proxy)"

// NoDBCause is an OpenDB error without the advice on supplying a DB.
func NoDBCause(err error) string { return strings.TrimSuffix(err.Error(), "; "+noDBAdvice) }

// DefaultCacheDir is where the downloaded DB is kept.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "trivy")
}

// OpenDB makes the DB ready for detection (trivy's DB is process-global):
// the prepared one, or the cached one, downloaded first when missing or
// past its NextUpdate. Close it with CloseDB.
func OpenDB(ctx context.Context, o DBOptions) (*DBInfo, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	info := &DBInfo{}
	if o.Dir != "" {
		dir, err := preparedDir(o.Dir)
		if err != nil {
			return nil, err
		}
		info.Dir = dir
	} else {
		cache := o.CacheDir
		if cache == "" {
			cache = DefaultCacheDir()
		}
		info.Dir = db.Dir(cache)
		var opts []db.Option
		if o.Repository != "" {
			ref, err := name.ParseReference(o.Repository)
			if err != nil {
				return nil, fmt.Errorf("--db-repository %q: not an image reference: %w", o.Repository, err)
			}
			opts = append(opts, db.WithDBRepository([]name.Reference{ref}))
		}
		client := db.NewClient(info.Dir, true, opts...)
		needs, err := client.NeedsUpdate(ctx, "darktower", false)
		if err != nil {
			return nil, fmt.Errorf("%w: checking %s: %v; %s", ErrNoDB, info.Dir, err, noDBAdvice)
		}
		if needs {
			if err := client.Download(ctx, info.Dir, ftypes.RegistryOptions{}); err != nil {
				return nil, fmt.Errorf("%w: downloading Trivy's DB into %s failed: %v; %s", ErrNoDB, info.Dir, err, noDBAdvice)
			}
			info.Downloaded = true
		}
	}
	meta, err := metadata.NewClient(info.Dir).Get()
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no readable metadata.json: %v; %s", ErrNoDB, info.Dir, err, noDBAdvice)
	}
	if meta.Version != trivydb.SchemaVersion {
		return nil, fmt.Errorf("%w: %s has DB schema %d, this pipeline reads schema %d; %s", ErrNoDB, info.Dir, meta.Version, trivydb.SchemaVersion, noDBAdvice)
	}
	if err := db.Init(info.Dir); err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v; %s", ErrNoDB, trivydb.Path(info.Dir), err, noDBAdvice)
	}
	info.Version, info.UpdatedAt, info.NextUpdate = meta.Version, meta.UpdatedAt, meta.NextUpdate
	if o.MaxAge > 0 && now.Sub(meta.UpdatedAt) > o.MaxAge {
		info.Stale = fmt.Sprintf("the vulnerability DB was last updated %s (%s ago, more than %s): findings published since are missed",
			meta.UpdatedAt.Format(time.RFC3339), now.Sub(meta.UpdatedAt).Round(time.Hour), o.MaxAge)
	}
	return info, nil
}

// CloseDB releases the DB.
func CloseDB() error { return trivydb.Close() }

// preparedDir finds trivy.db and metadata.json in dir or dir/db.
func preparedDir(dir string) (string, error) {
	for _, d := range []string{dir, filepath.Join(dir, "db")} {
		if _, err := os.Stat(trivydb.Path(d)); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: --vuln-db %s holds no trivy.db (looked in it and in its db/); %s", ErrNoDB, dir, noDBAdvice)
}

// DBIdentity names the DB's data for the findings cache: its schema,
// metadata times and trivy.db's size and modification time (hashing a
// full Trivy DB, hundreds of MB, would cost more than a scan). A new or
// refreshed DB changes it.
func DBIdentity(info *DBInfo) string {
	if info == nil {
		return ""
	}
	id := fmt.Sprintf("trivy schema %d updated %s next %s", info.Version, info.UpdatedAt.UTC().Format(time.RFC3339Nano), info.NextUpdate.UTC().Format(time.RFC3339Nano))
	if st, err := os.Stat(trivydb.Path(info.Dir)); err == nil {
		id += fmt.Sprintf(" trivy.db %d bytes modified %s", st.Size(), st.ModTime().UTC().Format(time.RFC3339Nano))
	}
	return id
}
