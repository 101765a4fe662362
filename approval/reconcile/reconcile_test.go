package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A finding is bounded for the log, said the same way everywhere, and
// stored once per request and once per call.
func TestAFindingIsStoredOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.CreateTables(ctx, `CREATE TABLE approval_requests (id TEXT PRIMARY KEY); INSERT INTO approval_requests VALUES ('r1')`); err != nil {
			t.Fatal(err)
		}
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		f := Finding{Ran: true, By: "  ops\x1b[31m ", Note: strings.Repeat("n", 2*maxText)}.Bounded()
		if strings.ContainsRune(f.By, 0x1b) || strings.TrimSpace(f.By) != f.By {
			t.Fatalf("by %q keeps a control character", f.By)
		}
		if len(f.Note) > maxText+len("…") {
			t.Fatalf("note of %d bytes, want at most %d", len(f.Note), maxText)
		}
		if got := (Finding{Ran: false, By: "ops"}).String(); got != "reconciled: did not run, reconciled by ops" {
			t.Fatalf("finding says %q", got)
		}
		put := func(fn func(tx *sql.Tx) error) error { return storetest.InTx(t, db, fn) }
		now := time.Now()
		for i := range 2 {
			err := put(func(tx *sql.Tx) error { return PutRequest(ctx, tx, "r1", f, now) })
			if (i == 0) != (err == nil) || (i == 1 && !errors.Is(err, ErrReconciled)) {
				t.Fatalf("finding %d about r1: %v", i+1, err)
			}
			err = put(func(tx *sql.Tx) error { return PutCall(ctx, tx, 42, f, now) })
			if (i == 0) != (err == nil) || (i == 1 && !errors.Is(err, ErrReconciled)) {
				t.Fatalf("finding %d about #42: %v", i+1, err)
			}
		}
		done, err := calls(ctx, db)
		if err != nil || len(done) != 1 || !done[42] {
			t.Fatalf("reconciled calls %v, %v", done, err)
		}
	})
}
