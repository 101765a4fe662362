package daemon

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// On SQLite the shared state stays in memory: every field is a nil
// interface, which the guard, page and server read as "in memory".
func TestReplicaSharedIsMemoryOnSQLite(t *testing.T) {
	db := storetest.ConnectFile(t, filepath.Join(t.TempDir(), store.FileName))
	sh, err := openReplicaShared(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if sh.usage != nil || sh.sessions != nil || sh.tasks != nil {
		t.Fatalf("SQLite's shared state is not memory: %+v", sh)
	}
}

// On PostgreSQL all three are kept in the database.
func TestReplicaSharedIsTheDatabaseOnPostgreSQL(t *testing.T) {
	db := storetest.Connect(t, pgtest.URL(t))
	sh, err := openReplicaShared(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if sh.usage == nil || sh.sessions == nil || sh.tasks == nil {
		t.Fatalf("PostgreSQL's shared state is not all in the database: %+v", sh)
	}
}
