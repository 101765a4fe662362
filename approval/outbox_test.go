package approval

import (
	"context"
	"slices"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// Finish returns once the outcome is in the log and deletes its outbox row
// after; while that delete cannot be made, the entry waits in the outbox
// and no later flush of this process appends it again (it deletes it
// first). The database refuses the delete itself (a trigger), as a full
// disk or a lost connection would.
func TestOutcomeIsLoggedOnceWhenItsOutboxDeleteFails(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)
	req, err := f.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`CREATE TRIGGER keep_outbox BEFORE DELETE ON approval_outbox BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	err = f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted, Result: []byte(`{"ok":true}`),
		Record: audit.Entry{Kind: vocab.KindCallExecuted, Agent: req.Agent, Tool: req.Tool, Decision: string(req.Level)}})
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	executed := func() int {
		n := 0
		for _, k := range f.rec.Kinds(req.ID) {
			if k == vocab.KindCallExecuted {
				n++
			}
		}
		return n
	}
	if n := executed(); n != 1 {
		t.Fatalf("call.executed logged %d times when Finish returned, want 1", n)
	}
	if err := f.svc.flush(ctx, false); err == nil {
		t.Fatal("a flush whose delete is refused reported success")
	}
	if n := executed(); n != 1 {
		t.Fatalf("call.executed logged %d times after a flush, want 1", n)
	}
	if _, err := f.db.Exec(`DROP TRIGGER keep_outbox`); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := f.db.QueryRow(`SELECT COUNT(*) FROM approval_outbox`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("outbox holds %d entries (%v), want none", left, err)
	}
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
	if got := f.rec.Kinds(req.ID); !slices.Equal(got, want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
}
