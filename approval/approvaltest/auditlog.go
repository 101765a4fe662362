package approvaltest

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
)

// OpenLog opens a database in a fresh directory and the real audit log in
// it, with that directory's server key; both close with the test.
func OpenLog(t testing.TB) (dir string, db *store.DB, log *audit.Log, key ed25519.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	db = storetest.Connect(t, filepath.Join(dir, store.FileName))
	var err error
	if key, err = audit.LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	if log, err = auditpg.Open(ctx, db, key, audit.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return dir, db, log, key
}
