package approval

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// restart stops f's service, as a process that dies does (its in-memory
// state is gone), and opens a new one on the same database and log.
func (f *fixture) restart(t *testing.T) {
	t.Helper()
	f.svc.Close()
	svc, err := New(context.Background(), f.db, f.rec, f.svc.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	f.svc = svc
}

func pollRequest(approvers ...string) NewRequest {
	r := paymentRequest(approvers...)
	r.Wait = WaitPoll
	return r
}

func TestRestartCancelsBlockModeAndKeepsPollMode(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)

		block, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		poll, err := f.svc.Create(ctx, pollRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		approved, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, approved.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		claimed, err := f.svc.Create(ctx, pollRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, claimed.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, claimed.ID); err != nil {
			t.Fatal(err)
		}

		f.restart(t)
		cancelled, err := f.svc.Restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cancelled, []string{block.ID}) {
			t.Fatalf("Restart cancelled %v, want only the block-mode request %s", cancelled, block.ID)
		}
		got, _ := f.svc.Get(ctx, block.ID)
		if got.State != vocab.StateCancelled || got.Reason != ReasonRestarted {
			t.Fatalf("block-mode request after restart: %s %q", got.State, got.Reason)
		}
		if kinds := f.rec.Kinds(block.ID); kinds[len(kinds)-1] != vocab.KindApprovalCancelled {
			t.Fatalf("cancellation not recorded: %v", kinds)
		}
		if e, _ := f.rec.Last(vocab.KindApprovalCancelled); e.Reason != ReasonRestarted || e.RequestID != block.ID {
			t.Fatalf("cancel entry %+v", e)
		}
		// Never approvable afterwards.
		if _, err := f.svc.BeginDecision(ctx, block.ID, vocab.Approve); !errors.Is(err, ErrNotPending) {
			t.Fatalf("BeginDecision on a request cancelled by restart: %v", err)
		}

		un, err := f.svc.Unfinished(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]Unfinished{}
		for _, u := range un {
			byID[u.ID] = u
		}
		if len(un) != 3 {
			t.Fatalf("unfinished %d requests, want the poll-mode, approved and claimed ones: %+v", len(un), un)
		}
		if u := byID[poll.ID]; u.State != vocab.StatePending || u.Wait != WaitPoll || u.Claimed || !u.ExpiresAt.Equal(poll.ExpiresAt) {
			t.Fatalf("poll-mode request after restart: %+v", u)
		}
		if u := byID[approved.ID]; u.State != vocab.StateApproved || u.Wait != WaitBlock || u.Claimed {
			t.Fatalf("approved request after restart: %+v", u)
		}
		if u := byID[claimed.ID]; u.State != vocab.StateApproved || !u.Claimed || u.Rule != "amount > 10000" {
			t.Fatalf("claimed request after restart: %+v", u)
		}
		var args map[string]any
		if err := json.Unmarshal(byID[poll.ID].Args, &args); err != nil || args["to"] != "Vendor X" {
			t.Fatalf("stored args %s (%v)", byID[poll.ID].Args, err)
		}
		// The poll-mode request can still be decided after the restart.
		if _, err := f.decide(t, poll.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFinishRecordsOutcomeWithState(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		req, err := f.svc.Create(ctx, pollRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatal(err)
		}
		err = f.svc.Finish(ctx, req.ID, Outcome{
			State: vocab.StateInterrupted, Note: "the server stopped while it ran",
			Record: audit.Entry{Kind: vocab.KindCallInterrupted, Tool: "transfer", Reason: "outcome unknown"},
		})
		if err != nil {
			t.Fatal(err)
		}
		e, ok := f.rec.Last(vocab.KindCallInterrupted)
		if !ok || e.RequestID != req.ID {
			t.Fatalf("call.interrupted not recorded with the request id: %+v", e)
		}
		ps, err := f.svc.Poll(ctx, req.ID, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		if ps.Status != PollInterrupted || !strings.HasSuffix(ps.Request.Reason, "; the server stopped while it ran") {
			t.Fatalf("poll after interruption: %s %q", ps.Status, ps.Request.Reason)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted}); !errors.Is(err, ErrNotExecuting) {
			t.Fatalf("Finish after interrupted: %v", err)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StatePending}); !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("Finish with a non-terminal state: %v", err)
		}
	})
}

func TestWatchLeavesRequestPendingWhenItStops(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		req, err := f.svc.Create(context.Background(), pollRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := f.svc.Watch(ctx, req.ID); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Watch: %v", err)
		}
		if got, _ := f.svc.Get(context.Background(), req.ID); got.State != vocab.StatePending {
			t.Fatalf("after Watch stopped the request is %s", got.State)
		}
	})
}

// A database from before wait_mode existed gets the column, and its
// requests count as block mode; its outbox gets its kind column.
func TestMigrateAddsWaitMode(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		req, err := f.svc.Create(ctx, pollRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		// As it was before wait_mode, the outbox's kind and schema_version.
		if _, err := f.db.Exec(`ALTER TABLE approval_requests DROP COLUMN wait_mode;
		ALTER TABLE approval_outbox DROP COLUMN kind; DROP TABLE schema_version`); err != nil {
			t.Fatal(err)
		}
		f.restart(t)
		if _, err := f.db.Exec(`SELECT kind FROM approval_outbox`); err != nil {
			t.Fatalf("the outbox after the migration: %v", err)
		}
		got, err := f.svc.Get(ctx, req.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Wait != WaitBlock {
			t.Fatalf("old request's wait mode %q, want block", got.Wait)
		}
		if _, err := f.svc.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.svc.Get(ctx, req.ID); got.State != vocab.StateCancelled {
			t.Fatalf("old pending request after restart: %s", got.State)
		}
	})
}

// Entries a dead process left in the outbox reach the log before anything
// the restart records, so the log keeps their order.
func TestRestartAppendsLeftoverEntriesFirst(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		req, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		leftover, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: req.ID, Reason: "left behind"})
		old := time.Now().Add(-2 * outboxStaleAfter).UnixNano()
		if _, err := f.db.Exec(`INSERT INTO approval_outbox (request_id, entry, owner, created_at) VALUES (?, ?, 'dead-process', ?)`,
			req.ID, leftover, old); err != nil {
			t.Fatal(err)
		}
		f.restart(t)
		if _, err := f.svc.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalRejected, vocab.KindApprovalCancelled}
		if got := f.rec.Kinds(req.ID); !slices.Equal(got, want) {
			t.Fatalf("kinds %v, want %v", got, want)
		}
	})
}

// A process that died (its liveness lock is free) has its outbox entries
// taken at once, and one it had appended before dying is not appended
// again; a process that lives keeps its entries until they are stale.
func TestOutboxOfADeadProcessIsTakenOnceAndAtOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req, err := f.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	put := func(owner string, e audit.Entry) {
		raw, _ := json.Marshal(e)
		if _, err := f.db.Exec(`INSERT INTO approval_outbox (request_id, entry, owner, created_at) VALUES (?, ?, ?, ?)`,
			req.ID, raw, owner, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	owners := f.svc.owners
	// The dead process appended this one and died before deleting it.
	appended := audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: req.ID, Reason: "appended, not deleted"}
	if _, err := f.rec.Append(ctx, appended); err != nil {
		t.Fatal(err)
	}
	put("dead", appended)
	put("dead", audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: req.ID, Reason: "never appended"})
	// exists, unlocked: its process is gone (on PostgreSQL its row is
	// fenced, as whoever found it dead left it)
	deadFile := filepath.Join(f.dir, store.OwnerFilePrefix+"dead")
	if f.db.Dialect() == store.PostgreSQL {
		if _, err := f.db.Exec(`INSERT INTO replicas (id, fenced) VALUES ('dead', true)`); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(deadFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	release, err := owners.Hold("live")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	put("live", audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: req.ID, Reason: "still to be appended by its process"})

	if err := f.svc.flush(ctx, true); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range f.rec.Entries() {
		if e.Kind == vocab.KindApprovalRejected {
			reasons = append(reasons, e.Reason)
		}
	}
	if want := []string{"appended, not deleted", "never appended"}; !slices.Equal(reasons, want) {
		t.Fatalf("rejected entries in the log %q, want %q", reasons, want)
	}
	var left []string
	rows, _ := f.db.Query(`SELECT owner FROM approval_outbox`)
	for rows.Next() {
		var o string
		rows.Scan(&o)
		left = append(left, o)
	}
	rows.Close()
	if !slices.Equal(left, []string{"live"}) {
		t.Fatalf("outbox after the flush holds entries of %v, want only the live process's", left)
	}
	if _, err := os.Stat(deadFile); !os.IsNotExist(err) {
		t.Errorf("the dead owner's lock file is still there: %v", err)
	}
}
