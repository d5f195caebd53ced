package ac

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/pgstore"
)

// RotationLead is how long after `ac-service rotate-key` the new key starts
// signing: one AC_KEY_RELOAD (every replica reloads, and so publishes the
// key in its JWKS, within that) plus a margin.
func RotationLead(keyReload time.Duration) time.Duration { return keyReload + 10*time.Second }

// RotateKeyMain is `ac-service rotate-key`: it creates the next signing key
// (sealed under AC_MASTER_KEY), published in the JWKS at the replicas' next
// reload and signing from RotationLead on; the replaced key stays published
// until every token it signed has expired. It reads AC_DATABASE_URL,
// AC_MASTER_KEY and AC_KEY_RELOAD, prints {"kid","activates_at"} and returns
// the exit status (2: configuration, 1: failure).
func RotateKeyMain(l *envconf.Loader, out, errOut io.Writer) int {
	const name = "ac-service rotate-key"
	dbURL := l.RequiredSecret("AC_DATABASE_URL", "a PostgreSQL URL, e.g. postgres://ac:PASSWORD@db:5432/ac?sslmode=verify-full")
	master := l.Base64Key("AC_MASTER_KEY", 32)
	reload := l.Duration("AC_KEY_RELOAD", time.Minute, time.Second, time.Hour)
	version := l.Int("AC_MASTER_KEY_VERSION", 1, 1, 1_000_000)
	if err := l.Err(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(errOut, "%s: configuration: %s\n", name, line)
		}
		return 2
	}
	pool, err := pgstore.Open(dbURL, 2, nil)
	if err != nil {
		fmt.Fprintf(errOut, "%s: AC_DATABASE_URL: %v\n", name, err)
		return 1
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := NewStore(pool, []byte(master.Reveal()))
	store.MasterVersion = version
	if err := store.Migrate(ctx); err != nil {
		fmt.Fprintf(errOut, "%s: migrating the schema: %v\n", name, err)
		return 1
	}
	// The current key must open under this master key: a new key sealed
	// under a wrong one would take AC down when it activates.
	if _, err := store.Keys(ctx); err != nil && !errors.Is(err, ErrNoActiveKey) {
		fmt.Fprintf(errOut, "%s: %v\n", name, err)
		return 1
	}
	kid, at, err := store.Rotate(ctx, RotationLead(reload))
	if err != nil {
		fmt.Fprintf(errOut, "%s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(out, "{\"kid\":%q,\"activates_at\":%q}\n", kid, at.UTC().Format(time.RFC3339))
	return 0
}
