// Package storetest opens the real database for tests. It imports only
// store, so any package's own tests (audit's, approval's) can use it
// without an import cycle.
package storetest

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/countersign/countersign/store"
)

// Open opens the database file in dir, as the server does, and closes it
// when the test ends. An error fails the test. Under EnvStore=postgres
// it opens the PostgreSQL database standing in for that file (Target);
// StoreOf gives its *store.DB.
func Open(t testing.TB, dir string) *sql.DB {
	t.Helper()
	path := filepath.Join(dir, store.FileName)
	if Dialect() == store.PostgreSQL {
		db := Connect(t, path)
		opened.Store(db.DB, db)
		t.Cleanup(func() { opened.Delete(db.DB) })
		return db.DB
	}
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// opened maps the *sql.DB Open returned on PostgreSQL to its *store.DB.
var opened sync.Map

// StoreOf returns the *store.DB of a database Open opened on PostgreSQL,
// or nil (on SQLite Open returns a bare *sql.DB).
func StoreOf(db *sql.DB) *store.DB {
	if s, ok := opened.Load(db); ok {
		return s.(*store.DB)
	}
	return nil
}

// InTx runs fn in one transaction of db (store.DB.InTx), committing only
// when fn succeeds, and returns fn's error (or the commit's).
func InTx(t testing.TB, db *store.DB, fn func(tx *sql.Tx) error) error {
	t.Helper()
	return db.InTx(context.Background(), fn)
}
