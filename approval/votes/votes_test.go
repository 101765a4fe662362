package votes

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Approvals reads back the approvals counted on a request, oldest first,
// each with the assertion Keep recorded for it (nil for a vote kept before
// assertions were), and leaves out denials and other requests' votes.
func TestApprovalsCarryTheirAssertions(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		// approval_votes is package approval's table; its columns as
		// approval/schema.go writes them, less the key to the request.
		for _, q := range []string{`CREATE TABLE approval_votes (
			request_id TEXT NOT NULL, approver_id TEXT NOT NULL, credential_id BLOB NOT NULL,
			decision TEXT NOT NULL, created_at INTEGER NOT NULL,
			PRIMARY KEY (request_id, approver_id, decision))`, Schema} {
			if _, err := db.ExecContext(ctx, db.Dialect().DDL(q)); err != nil {
				t.Fatal(err)
			}
		}
		at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
		sum := sha256.Sum256([]byte("bob's assertion"))
		err := storetest.InTx(t, db, func(tx *sql.Tx) error {
			for i, v := range []struct {
				req, approver string
				decision      vocab.Decision
			}{{"r1", "bob", vocab.Approve}, {"r1", "alice", vocab.Approve}, {"r1", "carol", vocab.Deny}, {"r2", "dave", vocab.Approve}} {
				if _, err := tx.ExecContext(ctx, `INSERT INTO approval_votes (request_id, approver_id, credential_id, decision, created_at) VALUES (?,?,?,?,?)`,
					v.req, v.approver, []byte{1}, v.decision, at.Add(time.Duration(i)*time.Second).UnixNano()); err != nil {
					return err
				}
			}
			return Keep(ctx, tx, "r1", "bob", vocab.Approve, sum)
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Approvals(ctx, db, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Approver != "bob" || got[1].Approver != "alice" {
			t.Fatalf("approvals %+v, want bob then alice", got)
		}
		if string(got[0].AssertionSHA256) != string(sum[:]) || got[1].AssertionSHA256 != nil {
			t.Fatalf("assertions %x, %x; want bob's, then none", got[0].AssertionSHA256, got[1].AssertionSHA256)
		}
		if !got[0].At.Equal(at) || got[0].At.Location() != time.UTC {
			t.Fatalf("bob voted at %v, want %v", got[0].At, at)
		}
	})
}
