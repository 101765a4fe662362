package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// wait bounds how long a test waits for what must happen; it is a
// deadline for a hang, not a measure of speed.
const wait = 30 * time.Second

func exec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func count(t *testing.T, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, table string) int {
	t.Helper()
	var n int
	if err := q.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConnectNamesTheDialect(t *testing.T) {
	dir := t.TempDir()
	for target, want := range map[string]store.Dialect{
		filepath.Join(dir, "a.db"):             store.SQLite,
		"sqlite:" + filepath.Join(dir, "b.db"): store.SQLite,
		pgtest.URL(t):                          store.PostgreSQL,
	} {
		db := storetest.Connect(t, target)
		if db.Dialect() != want {
			t.Errorf("%s: dialect %v, want %v", target, db.Dialect(), want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "b.db")); err != nil {
		t.Errorf("sqlite: URL did not open its file: %v", err)
	}
	if _, err := store.Connect(context.Background(), "sqlite://host/x.db"); err == nil {
		t.Error("a sqlite URL with a host was accepted")
	}
}

// The same statements, with ? placeholders, run on both engines, and a
// ? inside a literal stays text.
func TestPlaceholdersOnBothDialects(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		exec(t, db, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)`)
		exec(t, db, `INSERT INTO kv (k, v) VALUES (?, ?), (?, '?')`, "a", "one", "b")
		var v string
		if err := db.QueryRow(`SELECT v FROM kv WHERE k = ? AND v <> 'x?'`, "a").Scan(&v); err != nil || v != "one" {
			t.Fatalf("a = %q (%v)", v, err)
		}
		if err := db.QueryRow(`SELECT v FROM kv WHERE k = ?`, "b").Scan(&v); err != nil || v != "?" {
			t.Fatalf("b = %q (%v)", v, err)
		}
		st, err := db.Prepare(`SELECT v FROM kv WHERE k = ?`)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.QueryRow("a").Scan(&v); err != nil || v != "one" {
			t.Fatalf("prepared: a = %q (%v)", v, err)
		}
	})
}

// Two transactions that each read the table and then write what they
// read would, if they overlapped unchecked, both write 0. InTx makes
// them behave as if one ran after the other: on SQLite the write lock
// queues them; on PostgreSQL, made to overlap, one fails to serialize
// and runs again.
func TestInTxRerunsAConflictingTransaction(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		exec(t, db, `CREATE TABLE n (v INTEGER NOT NULL)`)
		ctx := context.Background()
		// On PostgreSQL both first runs read before either writes.
		var read sync.WaitGroup
		read.Add(2)
		var runs atomic.Int32
		write := func(tx *sql.Tx) error {
			first := runs.Add(1) <= 2
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM n`).Scan(&n); err != nil {
				return err
			}
			if first && db.Dialect() == store.PostgreSQL {
				read.Done()
				read.Wait()
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO n (v) VALUES (?)`, n)
			return err
		}
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- db.InTx(ctx, write) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		rows, err := db.Query(`SELECT v FROM n ORDER BY v`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []int
		for rows.Next() {
			var v int
			rows.Scan(&v)
			got = append(got, v)
		}
		if len(got) != 2 || got[0] != 0 || got[1] != 1 {
			t.Errorf("values %v, want [0 1]: the transactions did not serialize", got)
		}
		switch db.Dialect() {
		case store.PostgreSQL:
			if db.Retries() == 0 || runs.Load() < 3 {
				t.Errorf("retries %d, runs %d: the conflict was never retried", db.Retries(), runs.Load())
			}
		case store.SQLite:
			if db.Retries() != 0 || runs.Load() != 2 {
				t.Errorf("retries %d, runs %d: SQLite's queue should leave nothing to retry", db.Retries(), runs.Load())
			}
		}
	})
}

// An error that is not a conflict ends InTx at once, rolled back: fn's
// own, and a database error such as a division by zero.
func TestInTxReturnsOtherErrorsAtOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		exec(t, db, `CREATE TABLE n (v INTEGER NOT NULL)`)
		ctx := context.Background()
		mine := errors.New("no")
		runs := 0
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			runs++
			if _, err := tx.ExecContext(ctx, `INSERT INTO n (v) VALUES (1)`); err != nil {
				return err
			}
			return mine
		})
		if !errors.Is(err, mine) || runs != 1 {
			t.Errorf("InTx = %v after %d runs, want fn's error after 1", err, runs)
		}
		runs = 0
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			runs++
			// SQLite divides by zero to NULL; a NOT NULL column refuses it.
			_, err := tx.ExecContext(ctx, `INSERT INTO n (v) VALUES (1 / (SELECT COUNT(*) FROM n))`)
			return err
		})
		if err == nil || runs != 1 {
			t.Errorf("InTx = %v after %d runs, want the database's error after 1", err, runs)
		}
		if n := count(t, db, "n"); n != 0 {
			t.Errorf("%d rows after two failed transactions", n)
		}
		if db.Retries() != 0 {
			t.Errorf("retries %d", db.Retries())
		}
	})
}

// A conflict that never goes away is retried within a bound, then
// returned as the database's error; a deadlock is retried too.
func TestInTxGivesUpOnAConflictThatPersists(t *testing.T) {
	db := storetest.Connect(t, pgtest.URL(t))
	ctx := context.Background()
	raise := func(tx *sql.Tx, code string) error {
		_, err := tx.ExecContext(ctx, `DO $$ BEGIN RAISE EXCEPTION 'conflict?' USING ERRCODE = '`+code+`'; END $$`)
		return err
	}
	runs := 0
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		runs++
		return raise(tx, "40001")
	})
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "40001" {
		t.Fatalf("InTx = %v, want the database's error", err)
	}
	if runs < 2 || db.Retries() != uint64(runs-1) {
		t.Errorf("%d runs, %d retries counted: want several runs, each after the first counted", runs, db.Retries())
	}
	runs = 0
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		if runs++; runs == 1 {
			return raise(tx, "40P01")
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Errorf("deadlock: InTx = %v after %d runs, want nil after 2", err, runs)
	}
}

// A read in a snapshot does not see a row committed after its first
// read.
func TestSnapshotDoesNotSeeLaterCommits(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		exec(t, db, `CREATE TABLE n (v INTEGER NOT NULL)`)
		exec(t, db, `INSERT INTO n (v) VALUES (1)`)
		ctx := context.Background()
		err := db.Snapshot(ctx, func(tx *sql.Tx) error {
			before := count(t, tx, "n")
			if err := db.InTx(ctx, func(w *sql.Tx) error {
				_, err := w.ExecContext(ctx, `INSERT INTO n (v) VALUES (2)`)
				return err
			}); err != nil {
				return err
			}
			if after := count(t, tx, "n"); after != before {
				t.Errorf("the snapshot saw %d rows, then %d", before, after)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := count(t, db, "n"); n != 2 {
			t.Errorf("%d rows after the snapshot, want 2", n)
		}
	})
}

// A notification published in a transaction that rolls back is never
// delivered; one that commits is, and in order.
func TestPublishDeliversOnlyOnCommit(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := make(chan string, 16)
		if err := db.Subscribe(ctx, "requests", func(id string) { got <- id }); err != nil {
			t.Fatal(err)
		}
		publish := func(id string, rollback bool) {
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				if err := db.Publish(ctx, tx, "requests", id); err != nil {
					return err
				}
				if rollback {
					return errors.New("roll back")
				}
				return nil
			})
			if (err != nil) != rollback {
				t.Fatalf("publish %s: %v", id, err)
			}
		}
		publish("lost", true)
		publish("kept", false)
		publish("also kept", false)
		for _, want := range []string{"kept", "also kept"} {
			select {
			case id := <-got:
				if id != want {
					t.Fatalf("delivered %q, want %q", id, want)
				}
			case <-time.After(wait):
				t.Fatalf("%q never delivered", want)
			}
		}
		// Outside InTx there is no commit to wait for.
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := db.Publish(ctx, tx, "requests", "x"); err == nil {
			t.Error("Publish on a transaction InTx does not run was accepted")
		}
	})
}

// A transaction that announces one change twice sends it once, and the
// others in their order.
func TestPublishSendsARepeatOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := make(chan string, 16)
		if err := db.Subscribe(ctx, "requests", func(id string) { got <- id }); err != nil {
			t.Fatal(err)
		}
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			for _, id := range []string{"r1", "r2", "r1"} {
				if err := db.Publish(ctx, tx, "requests", id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.InTx(ctx, func(tx *sql.Tx) error { return db.Publish(ctx, tx, "requests", "next") }); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"r1", "r2", "next"} {
			select {
			case id := <-got:
				if id != want {
					t.Fatalf("delivered %q, want %q", id, want)
				}
			case <-time.After(wait):
				t.Fatalf("%q never delivered", want)
			}
		}
	})
}

// On PostgreSQL a notification reaches the other processes on the
// database: here a second DB, with its own LISTEN connection.
func TestPublishReachesAnotherReplica(t *testing.T) {
	url := pgtest.URL(t)
	a, b := storetest.Connect(t, url), storetest.Connect(t, url)
	ctx := context.Background()
	got := make(chan string, 4)
	if err := b.Subscribe(ctx, "requests", func(id string) { got <- id }); err != nil {
		t.Fatal(err)
	}
	if err := a.InTx(ctx, func(tx *sql.Tx) error { return a.Publish(ctx, tx, "requests", "r1") }); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "r1" {
			t.Fatalf("B got %q", id)
		}
	case <-time.After(wait):
		t.Fatal("B never heard of A's commit")
	}
}

// When the LISTEN connection is killed, subscribers are told to reread
// (""), and notifications arrive again on the new connection.
func TestSubscribeRereadsAfterTheListenerIsKilled(t *testing.T) {
	db := storetest.Connect(t, pgtest.URL(t))
	ctx := context.Background()
	got := make(chan string, 16)
	if err := db.Subscribe(ctx, "requests", func(id string) { got <- id }); err != nil {
		t.Fatal(err)
	}
	var killed bool
	err := db.QueryRow(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = ?`, store.ListenApplicationName).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("kill the listener: %v (%v)", killed, err)
	}
	select {
	case id := <-got:
		if id != "" {
			t.Fatalf("first after the kill: %q, want the reread signal", id)
		}
	case <-time.After(wait):
		t.Fatal("no reread signal after the listener was killed")
	}
	if err := db.InTx(ctx, func(tx *sql.Tx) error { return db.Publish(ctx, tx, "requests", "after") }); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "after" {
			t.Fatalf("after reconnecting: %q", id)
		}
	case <-time.After(wait):
		t.Fatal("nothing delivered after reconnecting")
	}
}

// A subscriber whose context ends hears nothing more; channels are
// separate.
func TestSubscriptionsEndWithTheirContext(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		sctx, cancel := context.WithCancel(ctx)
		gone := make(chan string, 4)
		if err := db.Subscribe(sctx, "requests", func(id string) { gone <- id }); err != nil {
			t.Fatal(err)
		}
		cancel()
		other := make(chan string, 4)
		if err := db.Subscribe(ctx, "runs", func(id string) { other <- id }); err != nil {
			t.Fatal(err)
		}
		stay := make(chan string, 4)
		if err := db.Subscribe(ctx, "requests", func(id string) { stay <- id }); err != nil {
			t.Fatal(err)
		}
		if err := db.InTx(ctx, func(tx *sql.Tx) error { return db.Publish(ctx, tx, "requests", "r") }); err != nil {
			t.Fatal(err)
		}
		select {
		case <-stay:
		case <-time.After(wait):
			t.Fatal("the live subscriber heard nothing")
		}
		if len(gone) != 0 || len(other) != 0 {
			t.Errorf("delivered to an ended subscription (%d) or another channel (%d)", len(gone), len(other))
		}
		if err := db.Subscribe(ctx, "", func(string) {}); err == nil {
			t.Error("an empty channel name was accepted")
		}
	})
}
