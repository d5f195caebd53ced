//go:build chaosfragile

package ac

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// fragileForgetsKey is a fault knob for the chaos stage's own test: built
// with -tags chaosfragile, ac-service replaces the active signing key with
// a new one each time it starts, as a replica keeping its key only in
// memory would; the ac-service pod-delete experiment must catch it. The pipeline refuses to push or release a build made with
// --go-tags.
const fragileForgetsKey = true

// forgetKey makes a new key active. The one it replaces stays published
// for RetireAfter, as after a rotation: tokens it signed still verify, so
// the damage is the changed kid itself (what the chaos stage must see),
// not every other service failing to authenticate.
func (s *Store) forgetKey(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockActiveKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET active = false, retired_at = now() + make_interval(secs => $1) WHERE active`,
			s.RetireAfter.Seconds()); err != nil {
			return err
		}
		return s.insertKey(ctx, tx, nil)
	})
}
