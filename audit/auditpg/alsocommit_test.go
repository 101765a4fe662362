package auditpg

import (
	"context"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// AlsoCommit's statement commits with the next batch or not at all: one
// that changes no row stores nothing of the batch, one that changes its
// row commits with it, and it runs once.
func TestAlsoCommitCommitsWithTheBatchOrNothing(t *testing.T) {
	ctx := context.Background()
	key := seededKey(4)
	db := storetest.Connect(t, pgtest.URL(t))
	if _, err := db.Exec(`CREATE TABLE pair (id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO pair VALUES (1, 'old')`); err != nil {
		t.Fatal(err)
	}
	l, b := openWith(t, db, key, audit.Options{})
	mustAppend(t, l, routine(1))

	b.AlsoCommit("move pair", `UPDATE pair SET v = $1 WHERE id = 1 AND v = $2`, "new", "not what it holds")
	if _, err := l.Append(ctx, routine(2)); err == nil || !strings.Contains(err.Error(), "move pair") {
		t.Fatalf("an append whose statement changed no row: %v", err)
	}
	if n, err := l.LastSeq(ctx); err != nil || n != 1 {
		t.Fatalf("the log ends at %d (%v) after the refused batch, want 1", n, err)
	}

	l, b = openWith(t, db, key, audit.Options{}) // a failed batch leaves its Log broken
	b.AlsoCommit("move pair", `UPDATE pair SET v = $1 WHERE id = 1 AND v = $2`, "new", "old")
	mustAppend(t, l, routine(2))
	var v string
	if err := db.QueryRow(`SELECT v FROM pair WHERE id = 1`).Scan(&v); err != nil || v != "new" {
		t.Fatalf("pair holds %q (%v) after the batch committed, want new", v, err)
	}
	mustAppend(t, l, routine(3)) // the statement ran once: 'new' matches no v = 'old' now
	if entries := verified(t, l, key); len(entries) != 3 {
		t.Fatalf("the log holds %d entries, want 3", len(entries))
	}
}
