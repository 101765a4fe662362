package storetest

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
)

// EnvStore names the environment variable that chooses the database of
// tests that do not name a dialect: "postgres" puts them on PostgreSQL
// (package pgtest), anything else (or nothing) on the SQLite file.
// scripts/test.sh runs the suites of the packages that keep state once
// with each.
const EnvStore = "COUNTERSIGN_TEST_STORE"

// Dialect is the dialect EnvStore chooses for this test binary.
func Dialect() store.Dialect {
	if os.Getenv(EnvStore) == "postgres" {
		return store.PostgreSQL
	}
	return store.SQLite
}

// SQLiteOnly marks a test that is about the SQLite file itself (its
// WAL, its corruption, its lock), which has no counterpart on
// PostgreSQL: under EnvStore=postgres it ends the test at once, saying
// why. The same test has run on SQLite in the suite's other pass.
func SQLiteOnly(t testing.TB, why string) {
	t.Helper()
	if Dialect() != store.SQLite {
		t.Skipf("about the SQLite file, not the store (%s); it runs on SQLite", why)
	}
}

var (
	byPathMu sync.Mutex
	// byPath holds the PostgreSQL database standing in for each SQLite
	// path, so that two opens of one path (two processes on one file)
	// meet in one database, as they would in the file.
	byPath = map[string]string{}
)

// Target is where a test that names a SQLite file (a path, as
// store.Connect takes) keeps its data: that path, or, under
// EnvStore=postgres, a fresh PostgreSQL database of its own, the same
// one for every later call with the same path (dropped when the test
// that first asked ends). A postgres:// URL is returned as it is.
func Target(t testing.TB, path string) string {
	t.Helper()
	if Dialect() != store.PostgreSQL || strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://") {
		return path
	}
	key, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	byPathMu.Lock()
	defer byPathMu.Unlock()
	if u, ok := byPath[key]; ok {
		return u
	}
	u := pgtest.URL(t)
	byPath[key] = u
	t.Cleanup(func() {
		byPathMu.Lock()
		delete(byPath, key)
		byPathMu.Unlock()
	})
	return u
}

// StandIn returns the PostgreSQL database Target made for path, if a
// test has asked for one and has not ended: for tools (a CLI run on a
// data directory) that should meet a server already there, without
// making a database of their own.
func StandIn(path string) (url string, ok bool) {
	key, err := filepath.Abs(path)
	if err != nil {
		return "", false
	}
	byPathMu.Lock()
	defer byPathMu.Unlock()
	url, ok = byPath[key]
	return url, ok
}

// ConnectFile opens the SQLite file at path whatever EnvStore says, for
// tests that run on each dialect by name (Dialects) or are about the
// file (SQLiteOnly), and closes it when the test ends.
func ConnectFile(t testing.TB, path string, opts ...store.Option) *store.DB {
	t.Helper()
	return connect(t, path, opts...)
}
