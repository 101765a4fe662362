// Package storetest opens the real database for tests. It imports only
// store, so any package's own tests (audit's, approval's) can use it
// without an import cycle.
package storetest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/store"
)

// Open opens the database file in dir, as the server does, and closes it
// when the test ends. An error fails the test.
func Open(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// InTx runs fn in one transaction of db (store.DB.InTx), committing only
// when fn succeeds, and returns fn's error (or the commit's).
func InTx(t testing.TB, db *store.DB, fn func(tx *sql.Tx) error) error {
	t.Helper()
	return db.InTx(context.Background(), fn)
}
