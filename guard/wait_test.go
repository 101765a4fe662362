package guard

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// newBlockingWorld is a world whose calls wait in block mode, at most
// blockFor.
func newBlockingWorld(t *testing.T, blockFor time.Duration) *world {
	t.Helper()
	w := newWorld(t)
	w.policy.d.Wait = authz.WaitBlock
	w.tune = func(o *Options) { o.BlockFor = blockFor }
	return w
}

// A call nobody decides within BlockFor returns authorization_pending and
// its request becomes a poll-mode one: a shutdown leaves it pending, a
// restart resumes it instead of cancelling it, and once approved it runs
// once.
func TestHandedOverRequestOutlivesAShutdownAndRunsOnceWhenApproved(t *testing.T) {
	w := newBlockingWorld(t, 100*time.Millisecond)
	ctx := context.Background()
	p1 := w.start()
	id := w.raise(p1, "note", map[string]any{"note": "late"})
	if r, err := p1.svc.Get(ctx, id); err != nil || r.State != vocab.StatePending || r.Wait != approval.WaitPoll {
		t.Fatalf("request after block_for: %+v, %v; want pending in poll mode", r, err)
	}
	if err := p1.g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := p2.svc.Get(ctx, id); r.State != vocab.StatePending {
		t.Fatalf("handed-over request after a shutdown and a restart: %s %q, want pending", r.State, r.Reason)
	}
	w.approve(p2, id)
	w.waitState(p2, id, vocab.StateExecuted)
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
	w.waitKinds(id, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
}

// Approved in the same life after BlockFor, the parked request runs once
// and approval_status hands over its result.
func TestHandedOverRequestRunsOnceAndIsCollected(t *testing.T) {
	w := newBlockingWorld(t, 100*time.Millisecond)
	ctx := context.Background()
	p := w.start()
	id := w.raise(p, "note", map[string]any{"note": "collect me"})
	w.approve(p, id)
	w.waitState(p, id, vocab.StateExecuted)
	// The tool itself: this world's policy would want approval_status
	// approved too.
	res, err := p.g.StatusSpec().Run(ctx, &tools.Call{Agent: "bot", Args: map[string]any{"auth_req_id": id}})
	if err != nil || !strings.Contains(text(res.MCP), `"status":"executed"`) || !strings.Contains(text(res.MCP), "collect me") {
		t.Fatalf("approval_status: %+v, %v", res, err)
	}
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
}

// A decision within BlockFor reaches the waiting call; a caller that
// leaves before BlockFor cancels its request, as without it.
func TestWithinBlockForTheCallGetsTheDecisionOrCancelsWhenItLeaves(t *testing.T) {
	w := newBlockingWorld(t, time.Minute)
	ctx := context.Background()
	p := w.start()
	done := make(chan string, 1)
	go func() {
		done <- text(p.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "in time"}}))
	}()
	id := w.pendingID(p)
	w.approve(p, id)
	if got := <-done; !strings.Contains(got, "in time") || !strings.Contains(got, "request:"+id) {
		t.Fatalf("result of a call approved within block_for: %s", got)
	}

	leave, cancel := context.WithCancel(ctx)
	left := make(chan string, 1)
	go func() {
		left <- text(p.g.Handle(leave, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "gone"}}))
	}()
	gone := w.pendingID(p)
	cancel()
	<-left
	if r := w.waitState(p, gone, vocab.StateCancelled); !strings.Contains(r.Reason, "caller went away") {
		t.Fatalf("request of a caller that left: %s %q", r.State, r.Reason)
	}
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
}

// pendingID waits until one request is pending and returns its id.
func (w *world) pendingID(p *process) string {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := p.svc.Pending(context.Background(), 10)
		if err != nil {
			w.t.Fatal(err)
		}
		if len(rs) == 1 {
			return rs[0].ID
		}
		if time.Now().After(deadline) {
			w.t.Fatal("no pending request")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A tool with an output schema gets the pending answer as an error
// result's text: clients check a normal result's structured content
// against the schema, and the answer is not of its shape.
func TestPendingAnswerOfAToolWithAnOutputSchemaIsNotCheckedAgainstIt(t *testing.T) {
	w := newBlockingWorld(t, 50*time.Millisecond)
	typed := w.book.spec("typed")
	typed.Def.RawOutputSchema = json.RawMessage(`{"type":"object","properties":{"note":{"type":"string"}},"required":["note"]}`)
	if err := w.cat.Replace("typed", []*tools.Spec{typed}); err != nil {
		t.Fatal(err)
	}
	p := w.start()
	res := p.g.Handle(context.Background(), Call{Tool: "typed", Agent: "bot", Args: map[string]any{"note": "x"}})
	if !res.IsError || res.StructuredContent != nil || !strings.Contains(text(res), `"status":"authorization_pending"`) {
		t.Fatalf("pending answer of a tool with an output schema: error %v, structured %v, %s", res.IsError, res.StructuredContent, text(res))
	}
	res = p.g.Handle(context.Background(), Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "y"}})
	if res.IsError || res.StructuredContent == nil {
		t.Fatalf("pending answer of a tool without one: error %v, structured %v", res.IsError, res.StructuredContent)
	}
}
