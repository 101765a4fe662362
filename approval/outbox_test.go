package approval

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// lostReply is a log whose next append lands but reports an error, as a
// commit does whose reply the database never sent (it stopped).
type lostReply struct {
	*approvaltest.Recorder
	lose atomic.Bool
}

func (l *lostReply) Append(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	got, err := l.Recorder.Append(ctx, e)
	if err == nil && l.lose.CompareAndSwap(true, false) {
		return audit.Entry{}, errors.New("the connection ended before the commit's reply")
	}
	return got, err
}

// A request's approval.requested lands in the log, but its append
// reports an error: Create ends the request, and the flush that records
// the cancellation finds the entry already logged rather than appending
// it a second time.
func TestAnEntryWhoseAppendLandedDespiteAnErrorIsNotAppendedTwice(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	opts := Options{RPID: "localhost", Origins: []string{testOrigin}, PublicURL: testOrigin, Approvers: testApprovers, PollInterval: time.Second}
	if db.Dialect() == store.PostgreSQL {
		owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Owners = owners
	}
	rec := &lostReply{Recorder: &approvaltest.Recorder{}}
	svc, err := New(ctx, db, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })

	rec.lose.Store(true)
	r, err := svc.Create(ctx, paymentRequest("alice"))
	if err == nil || r == nil || r.ID == "" {
		t.Fatalf("Create whose entry's append failed: %+v, %v; want the request's ID and the error", r, err)
	}
	got, err := svc.Get(ctx, r.ID)
	if err != nil || got.State != vocab.StateCancelled {
		t.Fatalf("the request after its entry's append failed: %+v, %v; want it cancelled", got, err)
	}
	if kinds, want := rec.Kinds(r.ID), []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalCancelled}; !slices.Equal(kinds, want) {
		t.Fatalf("the log holds %v for the request, want %v", kinds, want)
	}
}

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
	// The decision's own entries leave the outbox behind its flush (on
	// PostgreSQL they may still be there): the refusal is for Finish's.
	if err := f.svc.flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	var queued int
	if err := f.db.QueryRow(`SELECT COUNT(*) FROM approval_outbox`).Scan(&queued); err != nil || queued != 0 {
		t.Fatalf("outbox holds %d entries (%v) before Finish, want none", queued, err)
	}
	create, drop := `CREATE TRIGGER keep_outbox BEFORE DELETE ON approval_outbox BEGIN SELECT RAISE(ABORT, 'refused'); END`, `DROP TRIGGER keep_outbox`
	if f.db.Dialect() == store.PostgreSQL {
		if _, err := f.db.Exec(`CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`); err != nil {
			t.Fatal(err)
		}
		create = `CREATE TRIGGER keep_outbox BEFORE DELETE ON approval_outbox FOR EACH ROW EXECUTE FUNCTION refuse_delete()`
		drop = `DROP TRIGGER keep_outbox ON approval_outbox`
	}
	if _, err := f.db.Exec(create); err != nil {
		t.Fatal(err)
	}
	err = f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted, Result: []byte(`{"ok":true}`),
		Record: audit.Entry{Kind: vocab.KindCallExecuted, Agent: req.Agent, Tool: req.Tool, Decision: string(req.Level)}})
	if err != nil && !errors.Is(err, ErrRecord) {
		// A flush the commit's announcement woke (PostgreSQL) may take
		// the outcome's row first and fail on its delete: Finish then
		// says the record failed, pessimistic, and the entry is still
		// logged once, which is what this test is about.
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
	if _, err := f.db.Exec(drop); err != nil {
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
