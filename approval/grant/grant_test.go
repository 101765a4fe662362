package grant

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A grant lets calls through only once its approval is logged, at most
// MaxCalls of them, and none after it is revoked; an offer reads back as
// it was stored.
func TestGrantInForceOnlyOnceLoggedAndWithinItsCalls(t *testing.T) {
	storetest.Dialects(t, testGrantInForce)
}

func testGrantInForce(t *testing.T, db *store.DB) {
	ctx := context.Background()
	// The outbox tables are approval's; a grant reads them to know whether
	// its approval is logged.
	if err := db.CreateTables(ctx, `CREATE TABLE approval_outbox (request_id TEXT, entry BLOB, kind TEXT);
		CREATE TABLE approval_logged_assertions (request_id TEXT, approver_id TEXT, seq INTEGER)`); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, db, func(id string) string { return "Name of " + id })
	if err != nil {
		t.Fatal(err)
	}
	offer := &Offer{Condition: `args.amount <= 100`, MaxDuration: time.Hour, MaxCalls: 3}
	now := time.Now()
	terms := &Terms{ID: "g1", Condition: offer.Condition, MaxCalls: 1, Expires: now.Add(time.Hour).Truncate(time.Second)}
	if err := storetest.InTx(t, db, func(tx *sql.Tx) error {
		if err := PutOffer(ctx, tx, "r1", offer); err != nil {
			return err
		}
		return Create(ctx, tx, terms, "r1", "bot", "transfer", "alice", now)
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Offered(ctx, "r1"); err != nil || *got != *offer {
		t.Fatalf("offer %+v, %v; want %+v", got, err, offer)
	}
	if got, err := s.Offered(ctx, "r2"); err != nil || got != nil {
		t.Fatalf("offer of a request without one: %+v, %v", got, err)
	}
	if gs, err := s.Active(ctx, "bot", "transfer", now); err != nil || len(gs) != 0 {
		t.Fatalf("before its approval is logged: %d active, %v", len(gs), err)
	}
	if _, err := db.Exec(`INSERT INTO approval_logged_assertions VALUES ('r1', 'alice', 7)`); err != nil {
		t.Fatal(err)
	}
	// The approval.approved entry still in the outbox holds it back.
	if _, err := db.Exec(`INSERT INTO approval_outbox VALUES ('r1', ?, 'approval.approved')`, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if gs, err := s.Active(ctx, "bot", "transfer", now); err != nil || len(gs) != 0 {
		t.Fatalf("while approval.approved is in the outbox: %d active, %v", len(gs), err)
	}
	if _, err := db.Exec(`DELETE FROM approval_outbox`); err != nil {
		t.Fatal(err)
	}
	gs, err := s.Active(ctx, "bot", "transfer", now)
	if err != nil || len(gs) != 1 || gs[0].Seq != 7 || gs[0].ApproverName != "Name of alice" || !gs[0].Active(now) {
		t.Fatalf("once logged: %+v, %v", gs, err)
	}
	take := func() (*Use, error) {
		var u *Use
		err := storetest.InTx(t, db, func(tx *sql.Tx) (err error) {
			u, err = s.Take(ctx, tx, "g1", now)
			return err
		})
		return u, err
	}
	if u, err := take(); err != nil || u.Use != 1 {
		t.Fatalf("first use: %+v, %v", u, err)
	}
	if _, err := take(); !errors.Is(err, ErrGrantSpent) {
		t.Fatalf("a use past MaxCalls: %v, want ErrGrantSpent", err)
	}
	revoke := func() error {
		return storetest.InTx(t, db, func(tx *sql.Tx) error { return Revoke(ctx, tx, "g1", "alice", now) })
	}
	if err := revoke(); err != nil {
		t.Fatal(err)
	}
	if err := revoke(); !errors.Is(err, ErrRevoked) {
		t.Fatalf("second revocation: %v, want ErrRevoked", err)
	}
	if d1, err := terms.Digest([32]byte{1}); err != nil {
		t.Fatal(err)
	} else if d2, _ := (&Terms{ID: "g1", Condition: terms.Condition, MaxCalls: 2, Expires: terms.Expires}).Digest([32]byte{1}); d1 == d2 {
		t.Fatal("terms with other max calls have the same digest")
	}
}

// ender revokes through Revoke and keeps what it was asked, as package
// approval's does with its outbox.
type ender struct{ reasons []string }

func (e *ender) Owner() string { return "me" }

func (e *ender) RevokeGrant(ctx context.Context, tx *sql.Tx, id, by, reason string, now time.Time) (bool, error) {
	if err := Revoke(ctx, tx, id, by, now); errors.Is(err, ErrRevoked) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	e.reasons = append(e.reasons, id+" by "+by+": "+reason)
	return true, nil
}

// A leaver's grants: those in force that they made are revoked, once;
// an expired one, one whose approval another process's outbox holds, and
// another approver's are left.
func TestRevokeApprovedByEndsTheApproversGrantsInForceOnce(t *testing.T) {
	storetest.Dialects(t, testRevokeApprovedBy)
}

func testRevokeApprovedBy(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.CreateTables(ctx, `CREATE TABLE approval_outbox (request_id TEXT, entry BLOB, kind TEXT, owner TEXT);
		CREATE TABLE approval_logged_assertions (request_id TEXT, approver_id TEXT, seq INTEGER)`); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, db, func(id string) string { return id })
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	later, earlier := now.Add(time.Hour).Truncate(time.Second), now.Add(-time.Minute).Truncate(time.Second)
	for _, g := range []struct {
		id, approver string
		expires      time.Time
	}{{"g1", "alice", later}, {"g2", "alice", earlier}, {"g3", "alice", later}, {"g4", "bob", later}, {"g5", "alice", later}} {
		if err := storetest.InTx(t, db, func(tx *sql.Tx) error {
			return Create(ctx, tx, &Terms{ID: g.id, Condition: "true", MaxCalls: 2, Expires: g.expires}, "r-"+g.id, "bot", "transfer", g.approver, now)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO approval_outbox VALUES ('r-g3', ?, 'approval.approved', 'other')`, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	e := &ender{}
	ids, err := s.RevokeApprovedBy(ctx, "alice", "identity-provider", "gone", now, e)
	slices.Sort(ids) // made at the same instant: either order
	if err != nil || len(ids) != 2 || ids[0] != "g1" || ids[1] != "g5" || len(e.reasons) != 2 || !slices.Contains(e.reasons, "g1 by identity-provider: gone") {
		t.Fatalf("revoked %v (%q), %v; want g1 and g5", ids, e.reasons, err)
	}
	if ids, err := s.RevokeApprovedBy(ctx, "alice", "identity-provider", "gone", now, e); err != nil || len(ids) != 0 {
		t.Fatalf("asked again: revoked %v, %v", ids, err)
	}
	gs, err := s.Query(ctx, db, `g.revoked_at <> 0 ORDER BY g.id`)
	if err != nil || len(gs) != 2 || gs[0].ID != "g1" || gs[0].RevokedBy != "identity-provider" {
		t.Fatalf("revoked grants: %+v, %v", gs, err)
	}
}
