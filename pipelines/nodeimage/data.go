package nodeimage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/upstream"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// dataRoot is PostgreSQL, Redis and Prometheus from Debian's packages:
// the data stores of preview and local clusters, and the Prometheus that
// scrapes the services there (kube-prometheus-stack's images cannot be
// pulled where these clusters run).
var dataRoot = rootfsSpec{Name: "data", Packages: []string{"postgresql", "redis-server", "prometheus"}}

// postgresEntrypoint initializes the cluster on first start — TLS only
// (the server certificate mounted at /etc/darktower/pg), SCRAM passwords,
// the ac and gc roles and databases from AC_DB_PASSWORD and GC_DB_PASSWORD
// — then runs the server in the foreground.
const postgresEntrypoint = `#!/bin/sh
# Added by the Dark Tower deploy stage (pipelines/nodeimage, data image).
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
data=/var/lib/postgresql/data/pgdata
if [ ! -s "$data/PG_VERSION" ]; then
  mkdir -p "$data"
  "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/tmp'"
    echo "ssl = on"
    echo "ssl_cert_file = '/etc/darktower/pg/tls.crt'"
    echo "ssl_key_file = '/etc/darktower/pg/tls.key'"
    echo "password_encryption = scram-sha-256"
    echo "log_min_error_statement = panic"  # a failed statement may carry a password
  } >>"$data/postgresql.conf"
  printf 'local all postgres peer\nhostssl all all 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 reject\n' >"$data/pg_hba.conf"
  "$bin/pg_ctl" -D "$data" -w -o "-c listen_addresses=''" start >/dev/null
  # Passwords from the environment (\getenv), never on a command line;
  # psql's own error output would echo the statement, so it is dropped.
  if ! "$bin/psql" -h /tmp -U postgres -v ON_ERROR_STOP=1 -q >/dev/null 2>&1 <<'SQL'
\getenv acpw AC_DB_PASSWORD
\getenv gcpw GC_DB_PASSWORD
CREATE ROLE ac LOGIN PASSWORD :'acpw';
CREATE DATABASE ac OWNER ac;
CREATE ROLE gc LOGIN PASSWORD :'gcpw';
CREATE DATABASE gc OWNER gc;
SQL
  then
    echo "darktower-postgres: creating the ac and gc roles failed (AC_DB_PASSWORD and GC_DB_PASSWORD set?)" >&2
    exit 1
  fi
  "$bin/pg_ctl" -D "$data" -w stop >/dev/null
  echo "darktower-postgres: initialized (roles ac, gc; TLS only)"
fi
exec "$bin/postgres" -D "$data"
`

// DataServices is the data image and the accounts its servers run as.
type DataServices struct {
	Ref                          string
	PostgresUID, PostgresGID     int
	RedisUID, RedisGID           int
	PrometheusUID, PrometheusGID int
	root                         string
}

// Archive writes the image as a docker-archive tarball (for
// kindcluster.Cluster.LoadArchive).
func (d *DataServices) Archive(w io.Writer) error {
	ref, err := name.ParseReference(d.Ref)
	if err != nil {
		return err
	}
	img, err := d.Image()
	if err != nil {
		return err
	}
	return tarball.Write(ref, img, w)
}

// BuildDataServices makes the data image from a debootstrapped root
// (made once, cached like the node's).
func BuildDataServices(ctx context.Context, cacheDir, mirror string, progress io.Writer) (*DataServices, error) {
	if cacheDir == "" {
		cacheDir = upstream.DefaultCacheDir()
	}
	if mirror == "" {
		mirror = DefaultMirror()
	}
	root, err := ensureRootfs(ctx, cacheDir, mirror, dataRoot, progress)
	if err != nil {
		return nil, err
	}
	return dataServicesAt(root)
}

// FindDataServices is BuildDataServices for a data root made already (by
// node-image or a deploy): an error, not a debootstrap, when there is none.
func FindDataServices(cacheDir, mirror string) (*DataServices, error) {
	if cacheDir == "" {
		cacheDir = upstream.DefaultCacheDir()
	}
	if mirror == "" {
		mirror = DefaultMirror()
	}
	root := rootfsDir(cacheDir, mirror, dataRoot)
	if !upstream.Exists(filepath.Join(root, ".complete")) {
		return nil, fmt.Errorf("no data root at %s: `go run . node-image` makes it", root)
	}
	return dataServicesAt(root)
}

// Path is a file of the image's root on this host (e.g. usr/bin/promtool),
// for tools that check what the image's servers will read.
func (d *DataServices) Path(p string) string { return filepath.Join(d.root, p) }

func dataServicesAt(root string) (*DataServices, error) {
	var err error
	d := &DataServices{}
	if d.PostgresUID, d.PostgresGID, err = account(root, "postgres"); err != nil {
		return nil, err
	}
	if d.RedisUID, d.RedisGID, err = account(root, "redis"); err != nil {
		return nil, err
	}
	if d.PrometheusUID, d.PrometheusGID, err = account(root, "prometheus"); err != nil {
		return nil, err
	}
	// Named by its inputs (the root's key and the entrypoint), so that
	// finding it preloaded in a node costs no hashing of its layers.
	h := sha256.Sum256([]byte(filepath.Base(root) + "\n" + postgresEntrypoint))
	d.Ref = "darktower.local/dataservices:" + hex.EncodeToString(h[:])[:12]
	d.root = root
	return d, nil
}

// Image assembles the image (its root layer made once and kept gzipped).
func (d *DataServices) Image() (v1.Image, error) {
	epoch := time.Unix(0, 0).UTC()
	base, err := rootLayer(d.root, epoch)
	if err != nil {
		return nil, err
	}
	entry, err := treeLayer(tree{"usr/local/bin/darktower-postgres": {Mode: 0o755, Data: []byte(postgresEntrypoint)}}, epoch)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, base, entry)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", runtime.GOARCH, v1.Time{Time: epoch}
	cf.Config.Env = []string{fullPath}
	return mutate.ConfigFile(img, cf)
}

// account reads a user's uid and gid from the root's /etc/passwd.
func account(root, user string) (int, int, error) {
	f, err := os.Open(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 3 && fields[0] == user {
			uid, err1 := strconv.Atoi(fields[2])
			gid, err2 := strconv.Atoi(fields[3])
			if err1 == nil && err2 == nil {
				return uid, gid, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("the data image's root has no %s account in /etc/passwd", user)
}
