package store_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// Tables written in SQLite's words take 64-bit integers, doubles, bytes
// and flags (Go bools) on both engines, and number their own keys.
func TestCreateTablesOnBothDialects(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.CreateTables(ctx, `CREATE TABLE IF NOT EXISTS t (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			n  INTEGER NOT NULL,
			r  REAL NOT NULL,
			b  BLOB NOT NULL,
			f  INTEGER NOT NULL
		) STRICT;
		CREATE TABLE IF NOT EXISTS u (k TEXT PRIMARY KEY) STRICT, WITHOUT ROWID`); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := db.ExecContext(ctx, `INSERT INTO t (n, r, b, f) VALUES (?, ?, ?, ?)`, int64(1)<<50, 0.1, []byte{0, 1}, true); err != nil {
				t.Fatal(err)
			}
		}
		var id, n int64
		var r float64
		var b []byte
		var f bool
		if err := db.QueryRowContext(ctx, `SELECT id, n, r, b, f FROM t WHERE f = ? ORDER BY id DESC LIMIT 1`, true).Scan(&id, &n, &r, &b, &f); err != nil {
			t.Fatal(err)
		}
		if id != 2 || n != 1<<50 || r != 0.1 || string(b) != "\x00\x01" || !f {
			t.Errorf("read back id %d n %d r %v b %x f %v", id, n, r, b, f)
		}
	})
}

// Each migration runs once per database, however many replicas start
// at once.
func TestMigrateRunsEachMigrationOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.CreateTables(ctx, `CREATE TABLE IF NOT EXISTS runs (step INTEGER NOT NULL) STRICT`); err != nil {
			t.Fatal(err)
		}
		step := func(n int64) store.Migration {
			return func(ctx context.Context, tx *sql.Tx, _ store.Dialect) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO runs (step) VALUES (?)`, n)
				return err
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.Migrate(ctx, "test", step(1), step(2))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Migrate(ctx, "test", step(1), step(2), step(3)); err != nil {
			t.Fatal(err)
		}
		var runs, sum int64
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(step) FROM runs`).Scan(&runs, &sum); err != nil {
			t.Fatal(err)
		}
		if runs != 3 || sum != 6 {
			t.Errorf("%d runs summing %d, want 3 summing 6", runs, sum)
		}
	})
}
