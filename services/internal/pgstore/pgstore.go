// Package pgstore holds what AC and GC share about PostgreSQL: a bounded
// connection pool and ordered, idempotent schema migrations.
package pgstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Server-side timeouts set on every pooled connection.
const (
	StatementTimeout = 5 * time.Second
	LockTimeout      = 2 * time.Second
)

// Open parses the URL and builds a pool; it does not connect yet, so a
// service starts (not ready) while the database is down. The pool's
// utilization is exported on reg (the ADR's connection pool thresholds:
// scale up at 80%, down at 30%; see infra/platform/observability).
func Open(dsn envconf.Secret, maxConns int32, reg prometheus.Registerer) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn.Reveal())
	if err != nil {
		// pgx errors can quote the DSN, password included: say only what is wrong.
		return nil, fmt.Errorf("database URL is not a valid PostgreSQL connection string")
	}
	cfg.MaxConns = maxConns
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	// Server-side bounds: a statement or a lock wait that outlives them is
	// cancelled by PostgreSQL itself, so a stuck query cannot hold a
	// pooled connection (and the registry) indefinitely.
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(StatementTimeout.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(LockTimeout.Milliseconds(), 10)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		registerPoolMetrics(reg, pool)
	}
	return pool, nil
}

// registerPoolMetrics exports the pool's state at scrape time.
func registerPoolMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) {
	for state, value := range map[string]func(*pgxpool.Stat) int32{
		"acquired":     (*pgxpool.Stat).AcquiredConns,
		"idle":         (*pgxpool.Stat).IdleConns,
		"constructing": (*pgxpool.Stat).ConstructingConns,
	} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "db_pool_connections",
			Help:        "Connections in the PostgreSQL pool, by state.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(value(pool.Stat())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "db_pool_max_connections",
		Help: "The PostgreSQL pool's size limit.",
	}, func() float64 { return float64(pool.Stat().MaxConns()) }))
}

// Ping is the readiness check: one round trip on a pooled connection.
func Ping(pool *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error { return pool.Ping(ctx) }
}

// Migrate applies migrations[n] for every n not yet recorded in
// <name>_schema_migrations, in order, each in its own transaction, under an
// advisory lock so replicas starting together do not race.
func Migrate(ctx context.Context, pool *pgxpool.Pool, name string, migrations []string) error {
	table := pgx.Identifier{name + "_schema_migrations"}.Sanitize()
	h := fnv.New64a()
	h.Write([]byte(name))
	lockID := int64(h.Sum64())

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockID); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockID)

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
		version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var applied int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM `+table).Scan(&applied); err != nil {
		return err
	}
	for v := applied + 1; v <= len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO `+table+` (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s/%d: %w", name, v, err)
		}
	}
	return nil
}
