package ac

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/keyseal"
	"github.com/darktower/delivery/services/internal/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var migrations = []string{
	`CREATE TABLE signing_keys (
		kid            text PRIMARY KEY,
		public_key     bytea NOT NULL,
		sealed_private bytea NOT NULL,
		active         boolean NOT NULL DEFAULT false,
		created_at     timestamptz NOT NULL DEFAULT now(),
		retired_at     timestamptz
	);
	CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;`,
	// Rotation: a pending key (not active, activates_at set) is published
	// before any replica signs with it.
	`ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;`,
	// The version of AC_MASTER_KEY each private half is sealed under.
	`ALTER TABLE signing_keys ADD COLUMN master_version integer NOT NULL DEFAULT 1;`,
}

// SigningKey is a key as AC holds it in memory: the private half only for
// the active key.
type SigningKey struct {
	KeyID   string
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey // nil unless active
	Active  bool
}

// Store persists signing keys; private halves are sealed under the master key.
type Store struct {
	pool   *pgxpool.Pool
	master []byte
	// MasterVersion is master's version (AC_MASTER_KEY_VERSION); Previous,
	// when set, is the key of version MasterVersion-1
	// (AC_MASTER_KEY_PREVIOUS): rows sealed under it are re-sealed under
	// master at the next reload.
	MasterVersion int
	Previous      []byte
	// RetireAfter: how long a replaced key stays published after the
	// next one became active (tokens it signed must still verify).
	RetireAfter time.Duration
}

// NewStore wraps a pool.
func NewStore(pool *pgxpool.Pool, master []byte) *Store {
	return &Store{pool: pool, master: master, MasterVersion: 1, RetireAfter: authn.MaxTokenTTL + time.Minute}
}

// Migrate brings the schema up to date.
func (s *Store) Migrate(ctx context.Context) error {
	return pgstore.Migrate(ctx, s.pool, "ac", migrations)
}

// lockActiveKey serialises active-key creation across replicas.
const lockActiveKey = 0x0ac5e1

// EnsureActiveKey creates an active key if none exists and returns every
// unretired key, the active one unsealed.
func (s *Store) EnsureActiveKey(ctx context.Context) ([]SigningKey, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockActiveKey); err != nil {
			return err
		}
		if err := s.reseal(ctx, tx); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE active`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return s.insertKey(ctx, tx, nil)
		}
		// A pending key whose time has come replaces the active one, which
		// stays published until RetireAfter has passed.
		var next string
		err := tx.QueryRow(ctx, `SELECT kid FROM signing_keys WHERE NOT active AND retired_at IS NULL
			AND activates_at <= now() ORDER BY activates_at DESC LIMIT 1`).Scan(&next)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET active = false, retired_at = now() + make_interval(secs => $1) WHERE active`,
			s.RetireAfter.Seconds()); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE signing_keys SET active = true, activates_at = NULL WHERE kid = $1`, next)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensuring an active signing key: %w", err)
	}
	return s.Keys(ctx)
}

// reseal re-seals, under the current master key, every published key
// sealed under the previous version (master key rotation).
func (s *Store) reseal(ctx context.Context, tx pgx.Tx) error {
	if s.Previous == nil {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT kid, sealed_private FROM signing_keys
		WHERE master_version = $1 AND (retired_at IS NULL OR retired_at > now())`, s.MasterVersion-1)
	if err != nil {
		return err
	}
	type row struct {
		kid    string
		sealed []byte
	}
	var old []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.kid, &r.sealed); err != nil {
			rows.Close()
			return err
		}
		old = append(old, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range old {
		seed, err := keyseal.Open(s.Previous, r.sealed, []byte(r.kid))
		if err != nil {
			return fmt.Errorf("signing key %s does not open under AC_MASTER_KEY_PREVIOUS (version %d): %w", r.kid, s.MasterVersion-1, err)
		}
		sealed, err := keyseal.Seal(s.master, seed, []byte(r.kid))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET sealed_private = $1, master_version = $2 WHERE kid = $3`,
			sealed, s.MasterVersion, r.kid); err != nil {
			return err
		}
	}
	return nil
}

// ErrRotationPending: a next key is already waiting to become active.
var ErrRotationPending = errors.New("a key rotation is already pending")

// Rotate creates the next signing key, published at once and active from
// lead on; it refuses while another rotation is pending.
func (s *Store) Rotate(ctx context.Context, lead time.Duration) (kid string, activatesAt time.Time, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockActiveKey); err != nil {
			return err
		}
		var pending int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE NOT active AND retired_at IS NULL AND activates_at IS NOT NULL`).Scan(&pending); err != nil {
			return err
		}
		if pending > 0 {
			return ErrRotationPending
		}
		at := time.Now().Add(lead)
		if err := s.insertKey(ctx, tx, &at); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT kid, activates_at FROM signing_keys WHERE activates_at IS NOT NULL AND NOT active AND retired_at IS NULL`).Scan(&kid, &activatesAt)
	})
	return kid, activatesAt, err
}

// insertKey adds a key: active when activatesAt is nil, else pending.
func (s *Store) insertKey(ctx context.Context, tx pgx.Tx, activatesAt *time.Time) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	kid := newKeyID(time.Now())
	sealed, err := keyseal.Seal(s.master, priv.Seed(), []byte(kid))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO signing_keys (kid, public_key, sealed_private, active, activates_at, master_version)
		VALUES ($1, $2, $3, $4, $5, $6)`, kid, []byte(pub), sealed, activatesAt == nil, activatesAt, s.MasterVersion)
	return err
}

func newKeyID(now time.Time) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102") + "-" + hex.EncodeToString(b)
}

// ErrNoActiveKey means the table has no active key.
var ErrNoActiveKey = errors.New("no active signing key")

// Keys loads the published keys — active, pending, and replaced ones not
// yet retired — unsealing the active one.
func (s *Store) Keys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT kid, public_key, sealed_private, active, master_version FROM signing_keys
		WHERE retired_at IS NULL OR retired_at > now() ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []SigningKey
	active := false
	for rows.Next() {
		var k SigningKey
		var pub, sealed []byte
		var version int
		if err := rows.Scan(&k.KeyID, &pub, &sealed, &k.Active, &version); err != nil {
			return nil, err
		}
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing key %s: stored public key has %d bytes", k.KeyID, len(pub))
		}
		k.Public = ed25519.PublicKey(pub)
		if k.Active {
			if version != s.MasterVersion {
				return nil, fmt.Errorf("signing key %s is sealed under master key version %d, AC_MASTER_KEY_VERSION is %d (set AC_MASTER_KEY_PREVIOUS to the version %d key to re-seal)",
					k.KeyID, version, s.MasterVersion, s.MasterVersion-1)
			}
			seed, err := keyseal.Open(s.master, sealed, []byte(k.KeyID))
			if err != nil {
				return nil, fmt.Errorf("signing key %s cannot be unsealed (is AC_MASTER_KEY the one it was created with?): %w", k.KeyID, err)
			}
			k.Private = ed25519.NewKeyFromSeed(seed)
			active = true
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !active {
		return nil, ErrNoActiveKey
	}
	return keys, nil
}
