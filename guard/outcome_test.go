package guard

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// A task's result can be asked for again while it is kept, and afterwards
// the agent hears that the tool ran and its result was erased, with the
// approval token still.
func TestResultCanBeCollectedAgainUntilItsWindowEnds(t *testing.T) {
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	s := newRealStack(t, map[string]config.Tool{
		"pay":             {Level: "high", Approvers: []string{"bob"}},
		"approval_status": {Level: "low"},
	}, func(o *approval.Options) { o.Now, o.ResultTTL = now, time.Hour })
	c := &counter{}
	if err := s.cat.Replace("test", []*tools.Spec{c.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	if err := s.cat.Replace("guard", []*tools.Spec{s.g.StatusSpec()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, res := s.g.HandleTask(ctx, Call{Tool: "pay", Agent: "agent-7", Args: map[string]any{"amount": 5.0}})
	if r == nil {
		t.Fatalf("no task: %s", text(res))
	}
	s.tap(t, "bob", r.ID, vocab.Approve)
	var first string
	for i := range 2 {
		got, _, err := s.g.TaskResult(ctx, r.ID, "agent-7")
		if err != nil || got.IsError || !strings.Contains(text(got), `"ok":true`) {
			t.Fatalf("tasks/result #%d: %s (%v)", i+1, text(got), err)
		}
		if i == 0 {
			first = text(got)
		} else if text(got) != first {
			t.Errorf("asked again: %s, first %s", text(got), first)
		}
	}
	if c.count() != 1 {
		t.Fatalf("ran %d times", c.count())
	}
	status := func() string {
		return text(s.g.Handle(ctx, Call{Tool: "approval_status", Agent: "agent-7", Args: map[string]any{"auth_req_id": r.ID}}))
	}
	if st := status(); !strings.Contains(st, `"result":{"ok":true}`) {
		t.Errorf("approval_status within the window: %s", st)
	}

	mu.Lock()
	offset = time.Hour
	mu.Unlock()
	got, _, err := s.g.TaskResult(ctx, r.ID, "agent-7")
	if err != nil || !got.IsError || !strings.Contains(text(got), "has been erased") {
		t.Fatalf("tasks/result after the window: %s (%v)", text(got), err)
	}
	if tok, _ := got.GetResultMeta().GetMetaField(token.MCPMetaKey).(string); tok == "" {
		t.Error("the erased result's answer lost the approval token")
	}
	if _, err := s.svc.EraseResults(ctx); err != nil {
		t.Fatal(err)
	}
	if st := status(); strings.Contains(st, `"result":`) || !strings.Contains(st, `"result_erased"`) {
		t.Errorf("approval_status after the window: %s", st)
	}
}
