//go:build chaosfragile

package ac

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// fragileForgetsKey is a fault knob for the chaos stage's own test: built
// with -tags chaosfragile, ac-service replaces the active signing key with
// a new one each time it starts, as a replica keeping its key only in
// memory would; the ac-service pod-delete experiment must catch it (every
// token signed before the restart stops verifying once the old key is
// retired). The pipeline refuses to push or release a build made with
// --go-tags.
const fragileForgetsKey = true

// forgetKey retires the active key at once and makes a new one active.
func (s *Store) forgetKey(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockActiveKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET active = false, retired_at = now() WHERE active`); err != nil {
			return err
		}
		return s.insertKey(ctx, tx, nil)
	})
}
