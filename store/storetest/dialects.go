package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
)

// Dialects runs fn as one subtest per dialect, each on a fresh database:
// a SQLite file in a temporary directory, and a database of its own on
// a real PostgreSQL (package pgtest; the package's TestMain must call
// pgtest.Stop). The database is closed when the subtest ends. Under
// EnvStore=postgres only the PostgreSQL subtest runs: the suite's
// SQLite pass has run the other.
func Dialects(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	if Dialect() == store.SQLite {
		t.Run(store.SQLite.String(), func(t *testing.T) {
			fn(t, ConnectFile(t, filepath.Join(t.TempDir(), store.FileName)))
		})
	}
	t.Run(store.PostgreSQL.String(), func(t *testing.T) {
		fn(t, Connect(t, pgtest.URL(t)))
	})
}

// Connect opens the database target names (a path or URL, as
// store.Connect takes; a path goes through Target, so under
// EnvStore=postgres it is a PostgreSQL database standing in for that
// file) and closes it when the test ends. An error fails the test.
func Connect(t testing.TB, target string, opts ...store.Option) *store.DB {
	t.Helper()
	return connect(t, Target(t, target), opts...)
}

func connect(t testing.TB, target string, opts ...store.Option) *store.DB {
	t.Helper()
	db, err := store.Connect(context.Background(), target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
