package approval

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"

	"github.com/countersign/countersign/approval/approvaltest"
)

// withRereadEvery sets the reread backstop for one test, so that a waiter
// that returns did so because it was told of the change.
func withRereadEvery(t *testing.T, d time.Duration) {
	old := rereadEvery
	rereadEvery = d
	t.Cleanup(func() { rereadEvery = old })
}

// Two replicas on one PostgreSQL database: a decision taken on B wakes
// the call waiting on A, and A's OnChange hooks (the guard's dispatcher,
// the page), with the reread backstop an hour away.
func TestDecisionOnOneReplicaWakesAnother(t *testing.T) {
	withRereadEvery(t, time.Hour)
	url := pgtest.URL(t)
	dir := t.TempDir()
	a := fixtureOn(t, dir, storetest.Connect(t, url))
	b := fixtureOn(t, dir, storetest.Connect(t, url))
	if a.db.Dialect() != store.PostgreSQL {
		t.Fatalf("dialect %v", a.db.Dialect())
	}
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	b.enroll(t, "alice", alice)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	heard := make(chan string, 16)
	a.svc.OnChange(func(id string) {
		select {
		case heard <- id:
		default:
		}
	})
	req, err := a.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for len(heard) > 0 {
		<-heard // A's own change
	}
	woke := make(chan *Request, 1)
	go func() {
		r, err := a.svc.Wait(ctx, req.ID)
		if err != nil {
			t.Error(err)
		}
		woke <- r
	}()
	if _, err := b.decide(t, req.ID, vocab.Approve, alice); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-woke:
		if r == nil || r.State != vocab.StateApproved {
			t.Fatalf("A's waiter returned %+v, want approved", r)
		}
	case <-ctx.Done():
		t.Fatal("A's waiter was not woken by B's decision")
	}
	for {
		select {
		case id := <-heard:
			if id == req.ID || id == "" {
				return
			}
		case <-ctx.Done():
			t.Fatal("A's OnChange hooks did not hear B's decision")
		}
	}
}

// replicaPair is two Services on one PostgreSQL database, each with its
// own connections and the replicas table as owners, as two serve
// processes have.
func replicaPair(t *testing.T) (a, b *fixture) {
	t.Helper()
	url := pgtest.URL(t)
	dir := t.TempDir()
	open := func() *fixture {
		db := storetest.Connect(t, url)
		owners, err := store.OwnersFor(context.Background(), db, store.OwnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return fixtureOn(t, dir, db, func(o *Options) { o.Owners = owners })
	}
	return open(), open()
}

// sharedLog makes b append to a's recorder, as replicas append to one
// chain; a's start appended nothing yet (its outbox was empty).
func sharedLog(t *testing.T, a, b *fixture) {
	t.Helper()
	b.svc.Close()
	svc, err := New(context.Background(), b.db, a.rec, b.svc.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	b.svc, b.rec = svc, a.rec
}

// A replica starting beside a live one neither cancels its pending
// block-mode requests nor waits on (or takes) its outbox; once the first
// is fenced (found dead), the restart appends its entries first, cancels
// its block-mode request once, hands on its poll request, and the fenced
// replica commits nothing more.
func TestRestartSettlesOnlyWhatDeadReplicasLeft(t *testing.T) {
	a, b := replicaPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	block, err := a.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	poll, err := a.svc.Create(ctx, pollRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	// An old entry a live replica has queued and not appended yet: it is
	// that replica's to append, however old, and nobody waits for it.
	release, err := a.svc.owners.Hold("live-replica")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	put := func(owner, reason string, created time.Time) {
		t.Helper()
		e, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: block.ID, Reason: reason})
		if _, err := a.db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
			"", e, string(vocab.KindApprovalRejected), owner, created.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	put("live-replica", "queued by a live replica", time.Now().Add(-2*outboxStaleAfter))

	cancelled, err := b.svc.Restart(ctx)
	if err != nil || len(cancelled) != 0 {
		t.Fatalf("B's restart beside live A: cancelled %v, %v", cancelled, err)
	}
	unfinished, err := b.svc.Unfinished(ctx)
	if err != nil || len(unfinished) != 0 {
		t.Fatalf("B's unfinished beside live A: %d, %v", len(unfinished), err)
	}
	if got, _ := b.svc.Get(ctx, block.ID); got.State != vocab.StatePending {
		t.Fatalf("A's block-mode request after B started: %s", got.State)
	}
	var owners []string
	rows, err := a.db.Query(`SELECT owner FROM approval_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var o string
		rows.Scan(&o)
		owners = append(owners, o)
	}
	rows.Close()
	if !slices.Equal(owners, []string{"live-replica"}) || len(b.rec.Entries()) != 0 {
		t.Fatalf("after B's restart the outbox holds entries of %v and B appended %d", owners, len(b.rec.Entries()))
	}

	// A is found dead: fenced, as Owners.Dead does once its lock is free
	// and its heartbeat old (its row stays), with an entry queued.
	if err := b.svc.owners.Fence(ctx, a.svc.owner); err != nil {
		t.Fatal(err)
	}
	if err := a.svc.Cancel(ctx, poll.ID, "after the fence"); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("fenced A cancelled a request: %v", err)
	}
	a.svc.Close()
	left, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: block.ID, Reason: "queued by A"})
	if _, err := a.db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
		block.ID, left, string(vocab.KindApprovalRejected), a.svc.owner, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	cancelled, err = b.svc.Restart(ctx)
	if err != nil || !slices.Equal(cancelled, []string{block.ID}) {
		t.Fatalf("B's restart after A died: cancelled %v (want %s), %v", cancelled, block.ID, err)
	}
	if want := []vocab.Kind{vocab.KindApprovalRejected, vocab.KindApprovalCancelled}; !slices.Equal(b.rec.Kinds(block.ID), want) {
		t.Fatalf("B appended %v for A's block-mode request, want %v", b.rec.Kinds(block.ID), want)
	}
	if again, err := b.svc.Restart(ctx); err != nil || len(again) != 0 {
		t.Fatalf("a second restart cancelled %v, %v", again, err)
	}
	unfinished, err = b.svc.Unfinished(ctx)
	if err != nil || len(unfinished) != 1 || unfinished[0].ID != poll.ID || unfinished[0].State != vocab.StatePending {
		t.Fatalf("B's unfinished after A died: %+v, %v; want A's poll request, pending", unfinished, err)
	}
}

// The reaper (run by the leader while every replica serves) appends a
// dead replica's queued entries before anything it records for the same
// request, cancels its block-mode request once and leaves its poll
// request pending.
func TestReapCancelsADeadReplicasBlockingRequestsOnce(t *testing.T) {
	a, b := replicaPair(t)
	sharedLog(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	block, err := a.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	poll, err := a.svc.Create(ctx, pollRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if reaped, left, err := b.svc.Reap(ctx); err != nil || len(reaped) != 0 || len(left) != 0 {
		t.Fatalf("reap while A lives: %v, %d unfinished, %v", reaped, len(left), err)
	}
	// A dies (fenced, as Owners.Dead does once its lock is free and its
	// heartbeat old; its row stays) with an entry queued, not appended.
	if err := b.svc.owners.Fence(ctx, a.svc.owner); err != nil {
		t.Fatal(err)
	}
	a.svc.Close()
	left, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: block.ID, Reason: "queued by A"})
	if _, err := a.db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
		block.ID, left, string(vocab.KindApprovalRejected), a.svc.owner, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	reaped, unfinished, err := b.svc.Reap(ctx)
	if err != nil || !slices.Equal(reaped, []string{block.ID}) {
		t.Fatalf("reap after A died: %v (want %s), %v", reaped, block.ID, err)
	}
	if len(unfinished) != 1 || unfinished[0].ID != poll.ID {
		t.Fatalf("reap after A died left %+v unfinished, want A's poll request", unfinished)
	}
	if again, _, err := b.svc.Reap(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second reap: %v, %v", again, err)
	}
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalRejected, vocab.KindApprovalCancelled}
	if got := a.rec.Kinds(block.ID); !slices.Equal(got, want) {
		t.Fatalf("log of A's block-mode request %v, want %v", got, want)
	}
	if got, _ := b.svc.Get(ctx, block.ID); got.State != vocab.StateCancelled || got.Reason != ReasonRestarted {
		t.Fatalf("A's block-mode request: %s %q", got.State, got.Reason)
	}
	if got, _ := b.svc.Get(ctx, poll.ID); got.State != vocab.StatePending {
		t.Fatalf("A's poll request after the reap: %s, want pending", got.State)
	}
}

// An entry another replica queued for a request and has not appended yet
// stays first in the log: a replica recording a later step of the same
// request waits for it instead of overtaking it.
func TestEntriesOfOneRequestKeepTheirOrderAcrossReplicas(t *testing.T) {
	a, b := replicaPair(t)
	sharedLog(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := a.svc.Create(ctx, pollRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	// A's next entry for req, committed, not yet appended.
	first, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: req.ID, Reason: "queued by A first"})
	if _, err := a.db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
		req.ID, first, string(vocab.KindApprovalRejected), a.svc.owner, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.svc.Cancel(ctx, req.ID, "cancelled on B") }()
	// A's own outbox loop may append its entry at any moment (it retries
	// what is queued); if it has not within 200 ms, A flushes here. Either
	// way B's step must land after A's entry: had B not waited, its
	// approval.cancelled would come before A's approval.rejected below.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(200 * time.Millisecond):
		if err := a.svc.flush(ctx, false); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := a.svc.flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalRejected, vocab.KindApprovalCancelled}
	if got := a.rec.Kinds(req.ID); !slices.Equal(got, want) {
		t.Fatalf("log of the request %v, want %v", got, want)
	}
}

// A replica that cannot take its liveness lock does not start: its peers
// could not tell it alive, and every write in its name would be refused.
func TestReplicaWithoutItsLivenessLockRefusesToStart(t *testing.T) {
	db := storetest.Connect(t, pgtest.URL(t))
	ctx := context.Background()
	owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `DROP TABLE replicas`); err != nil {
		t.Fatal(err)
	}
	svc, err := New(ctx, db, &approvaltest.Recorder{}, Options{
		RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers, Owners: owners,
	})
	if err == nil {
		svc.Close()
		t.Fatal("a replica started without its liveness lock")
	}
	if !strings.Contains(err.Error(), "liveness lock") {
		t.Fatalf("error %q does not say what failed", err)
	}
}

// A dead replica's row is forgotten once the reap has settled what it
// left, and not before: while a request it raised is pending (block mode
// until the reap cancels it, poll mode until it ends) or an entry of its
// waits in the outbox, the row stays; a live replica's row always stays.
func TestDeadReplicasAreForgottenOnceSettled(t *testing.T) {
	a, b := replicaPair(t)
	sharedLog(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.svc.Create(ctx, paymentRequest("alice")); err != nil {
		t.Fatal(err)
	}
	poll, err := a.svc.Create(ctx, pollRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	forget := func(want ...string) {
		t.Helper()
		got, err := b.svc.ForgetReplicas(ctx, []string{a.svc.owner, b.svc.owner})
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("forgot %v (%v), want %v", got, err, want)
		}
	}
	forget() // A lives
	if err := b.svc.owners.Fence(ctx, a.svc.owner); err != nil {
		t.Fatal(err)
	}
	a.svc.Close()
	forget() // its block-mode request is not cancelled yet
	if _, _, err := b.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	forget() // its poll-mode request goes on
	if err := b.svc.Cancel(ctx, poll.ID, "no longer wanted"); err != nil {
		t.Fatal(err)
	}
	// An entry A left, which the log, down, cannot take yet.
	b.rec.SetFail(true)
	left, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: poll.ID, Reason: "queued by A"})
	if _, err := a.db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
		poll.ID, left, string(vocab.KindApprovalRejected), a.svc.owner, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	forget()
	b.rec.SetFail(false)
	if _, _, err := b.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	forget(a.svc.owner)
	if dead, _ := b.svc.DeadPeers(ctx); len(dead) != 0 {
		t.Errorf("dead peers %v after A was forgotten", dead)
	}
	forget()
}
