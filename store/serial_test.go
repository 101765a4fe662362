package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTest(t *testing.T, opts ...Option) *sql.DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), FileName), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE n (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// With SQLite's own busy timeout at zero, any two of this process's
// writers that overlapped would fail with SQLITE_BUSY: they succeed only
// because they queue on the write lock.
func TestConcurrentWritersQueueInProcess(t *testing.T) {
	db := openTest(t, func(o *options) { o.busy = 0 })
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				tx, err := db.Begin()
				if err != nil {
					errs <- err
					continue
				}
				var n int
				if err := tx.QueryRow(`SELECT COUNT(*) FROM n`).Scan(&n); err != nil {
					errs <- err
				}
				if _, err := tx.Exec(`INSERT INTO n (v) VALUES (?)`, n); err != nil {
					errs <- err
				}
				if err := tx.Commit(); err != nil {
					errs <- err
				}
				// A write outside a transaction queues too.
				if _, err := db.Exec(`UPDATE n SET v = v WHERE v = 0`); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM n`).Scan(&n); err != nil || n != writers*each {
		t.Fatalf("rows = %d (%v), want %d", n, err, writers*each)
	}
	// Each transaction counted the rows before it: serialized, the counts
	// are 0..n-1 with none repeated.
	var distinct int
	if err := db.QueryRow(`SELECT COUNT(DISTINCT v) FROM n`).Scan(&distinct); err != nil || distinct != n {
		t.Errorf("distinct counts = %d (%v), want %d", distinct, err, n)
	}
}

func TestWriteLockTimesOutLikeBusy(t *testing.T) {
	db := openTest(t, func(o *options) { o.lockWait = 50 * time.Millisecond })
	held, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	if _, err := db.Exec(`INSERT INTO n (v) VALUES (1)`); !errors.Is(err, errLockTimeout) {
		t.Fatalf("write while another is held: %v, want %v", err, errLockTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.BeginTx(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("begin with a cancelled context: %v", err)
	}
	// Readers never wait for the lock.
	ro, err := db.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only transaction while a write is held: %v", err)
	}
	ro.Rollback()
	if err := held.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO n (v) VALUES (1)`); err != nil {
		t.Fatalf("write after the holder rolled back: %v", err)
	}
}

func TestWritesClassifiesStatements(t *testing.T) {
	for q, want := range map[string]bool{
		"INSERT INTO x VALUES (1)":             true,
		"  update x set v = 1":                 true,
		"\n\tDELETE FROM x":                    true,
		"CREATE TABLE IF NOT EXISTS x (v)":     true,
		"SELECT * FROM x":                      false,
		"PRAGMA journal_mode":                  false,
		"":                                     false,
		"UPDATE x SET v=1 RETURNING v":         true,
		"WITH a AS (SELECT 1) SELECT * FROM a": false,
	} {
		if got := writes(q); got != want {
			t.Errorf("writes(%q) = %v, want %v", q, got, want)
		}
	}
}
