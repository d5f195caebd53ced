package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgresFreezeAndThaw(t *testing.T) {
	pg, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pg.Freeze(); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = conn.Ping(qctx)
	cancel()
	if err == nil {
		t.Fatal("a frozen PostgreSQL answered")
	}
	if len(childrenOf(pg.proc.cmd.Process.Pid)) == 0 {
		t.Fatal("no PostgreSQL children found")
	}
	if err := pg.Thaw(); err != nil {
		t.Fatal(err)
	}
	conn2, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatalf("after the thaw: %v", err)
	}
	conn2.Close(ctx)
}
