package storetest

import (
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
)

// Replicas runs fn as one subtest per dialect with two databases opened
// on one store, as two replicas (or, on SQLite, two processes on one
// file) would open it: a and b share every row but no memory. Both are
// closed when the subtest ends. Under EnvStore=postgres only the
// PostgreSQL subtest runs, as with Dialects.
func Replicas(t *testing.T, fn func(t *testing.T, a, b *store.DB)) {
	t.Helper()
	if Dialect() == store.SQLite {
		t.Run(store.SQLite.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), store.FileName)
			fn(t, ConnectFile(t, path), ConnectFile(t, path))
		})
	}
	t.Run(store.PostgreSQL.String(), func(t *testing.T) {
		url := pgtest.URL(t)
		fn(t, Connect(t, url), Connect(t, url))
	})
}
