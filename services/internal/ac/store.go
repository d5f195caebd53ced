package ac

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

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
}

// NewStore wraps a pool.
func NewStore(pool *pgxpool.Pool, master []byte) *Store { return &Store{pool: pool, master: master} }

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
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE active`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		return s.insertKey(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("ensuring an active signing key: %w", err)
	}
	return s.Keys(ctx)
}

func (s *Store) insertKey(ctx context.Context, tx pgx.Tx) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	kid := newKeyID(time.Now())
	sealed, err := keyseal.Seal(s.master, priv.Seed(), []byte(kid))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO signing_keys (kid, public_key, sealed_private, active) VALUES ($1, $2, $3, true)`,
		kid, []byte(pub), sealed)
	return err
}

func newKeyID(now time.Time) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102") + "-" + hex.EncodeToString(b)
}

// ErrNoActiveKey means the table has no active key.
var ErrNoActiveKey = errors.New("no active signing key")

// Keys loads the unretired keys, unsealing the active one.
func (s *Store) Keys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT kid, public_key, sealed_private, active FROM signing_keys
		WHERE retired_at IS NULL ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []SigningKey
	active := false
	for rows.Next() {
		var k SigningKey
		var pub, sealed []byte
		if err := rows.Scan(&k.KeyID, &pub, &sealed, &k.Active); err != nil {
			return nil, err
		}
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing key %s: stored public key has %d bytes", k.KeyID, len(pub))
		}
		k.Public = ed25519.PublicKey(pub)
		if k.Active {
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
