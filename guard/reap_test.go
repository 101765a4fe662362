package guard

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// Two replicas on one PostgreSQL database: the second starting leaves the
// first's claimed runs and waiting requests alone; once the first is gone
// the reaper gives each claimed run exactly one outcome, and its poll
// request, approved on the second, runs once there. Reaping again adds
// nothing.
func TestReapSettlesWhatAGoneReplicaLeftOnce(t *testing.T) {
	w := newWorldOn(t, storetest.Connect(t, pgtest.URL(t)))
	ctx := context.Background()
	p1 := w.start()
	claimed := func(tool, args string) string {
		r, err := p1.svc.Create(ctx, approval.NewRequest{Tool: tool, Agent: "bot", Args: digest.MustParseArgs(args),
			Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitPoll})
		if err != nil {
			t.Fatal(err)
		}
		w.approve(p1, r.ID)
		if err := p1.svc.BeginExecution(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	doneID := claimed("note", `{"note":"paid"}`)
	unknownID := claimed("pay", `{"amount":5,"to":"X"}`)
	if _, err := w.book.spec("note").Run(ctx, &tools.Call{ID: "request:" + doneID, Args: map[string]any{"note": "paid"}}); err != nil {
		t.Fatal(err)
	}
	poll := w.raise(p1, "note", map[string]any{"note": "keep me"})
	block, err := p1.svc.Create(ctx, approval.NewRequest{Tool: "note", Agent: "bot", Args: digest.MustParseArgs(`{"note":"x"}`),
		Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p2.g.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]vocab.State{doneID: vocab.StateApproved, unknownID: vocab.StateApproved, poll: vocab.StatePending, block.ID: vocab.StatePending} {
		if r, _ := p2.svc.Get(ctx, id); r.State != want {
			t.Fatalf("request %s of the live replica after the second started: %s, want %s", id, r.State, want)
		}
	}

	p1.die()
	for range 2 {
		if err := p2.g.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := p2.svc.Get(ctx, block.ID); r.State != vocab.StateCancelled || r.Reason != approval.ReasonRestarted {
		t.Fatalf("block-mode request after the reap: %s %q", r.State, r.Reason)
	}
	w.waitState(p2, doneID, vocab.StateExecuted)
	w.waitState(p2, unknownID, vocab.StateInterrupted)
	w.waitKinds(doneID, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
	w.waitKinds(unknownID, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallInterrupted)
	w.waitKinds(block.ID, vocab.KindApprovalRequested, vocab.KindApprovalCancelled)
	if w.once.count() != 0 {
		t.Fatal("a backend that cannot tell ran after the reap")
	}

	w.approve(p2, poll)
	w.waitState(p2, poll, vocab.StateExecuted)
	if err := p2.g.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	w.waitKinds(poll, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
	if n := w.book.count(); n != 2 {
		t.Fatalf("book has %d effects, want the recovered one and the poll request's one run", n)
	}
}

// A replica starting beside a live one does not settle the routine calls
// the log shows open: they are the live one's, in flight, and get their
// one outcome from it.
func TestStartBesideALiveReplicaLeavesItsRoutineCallsInFlight(t *testing.T) {
	w := newWorldOn(t, storetest.Connect(t, pgtest.URL(t)))
	w.policy.d = authz.Decision{Level: vocab.LevelLow}
	ctx := context.Background()
	p1 := w.start()
	if err := p1.g.Resume(ctx); err != nil { // sets the mark on a new database
		t.Fatal(err)
	}
	release := w.book.holdRuns(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p1.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "in flight"}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for w.routineKinds()[vocab.KindCallAllowed] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the routine call was not allowed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	<-done
	kinds := w.routineKinds()
	if outcomes := kinds[vocab.KindCallExecuted] + kinds[vocab.KindCallFailed] + kinds[vocab.KindCallInterrupted]; outcomes != 1 {
		t.Fatalf("the routine call has %d outcomes (%v), want its own one", outcomes, kinds)
	}
	if kinds[vocab.KindCallInterrupted] != 0 {
		t.Fatalf("the starting replica interrupted a live one's call: %v", kinds)
	}
}

// routineKinds counts the log's entries of calls no request covers, by kind.
func (w *world) routineKinds() map[vocab.Kind]int {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	n := map[vocab.Kind]int{}
	for _, e := range w.log.entries {
		if e.RequestID == "" {
			n[e.Kind]++
		}
	}
	return n
}
