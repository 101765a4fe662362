package guard

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// What the transports see of a task's request is the guard's copy of the
// stored request: the same fields, whether it has settled, and, once it
// has, how it ended in the words the agent gets.
func TestTaskRequestViewIsTheStoredRequest(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{"pay": {Level: "high", Approvers: []string{"bob"}}})
	c := &counter{}
	if err := s.cat.Replace("test", []*tools.Spec{c.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, res := s.g.HandleTask(ctx, Call{Tool: "pay", Agent: "agent-7", Args: map[string]any{"amount": 5.0}})
	if v == nil {
		t.Fatalf("no task: %s", text(res))
	}
	same := func(v *Request) {
		t.Helper()
		r, err := s.svc.Get(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if v.State != r.State || v.Running != r.Running || v.Code != r.Code || v.BindingMessage != r.BindingMessage ||
			v.URL != r.URL || !slices.Equal(v.Approvers, r.Approvers) || !slices.Equal(v.ApproverNames, r.ApproverNames) ||
			v.Quorum != r.Quorum || !slices.Equal(v.Approvals, r.Approvals) || !v.CreatedAt.Equal(r.CreatedAt) ||
			!v.DecidedAt.Equal(r.DecidedAt) || !v.ExpiresAt.Equal(r.ExpiresAt) {
			t.Errorf("view %+v\nstored %+v", v, r)
		}
		if Settled(v) {
			if want := Outcome(r); v.Outcome != want {
				t.Errorf("outcome %q, want %q", v.Outcome, want)
			}
		} else if v.Outcome != "" {
			t.Errorf("a request that has not settled has an outcome: %q", v.Outcome)
		}
	}
	same(v)
	if v.State != vocab.StatePending || Settled(v) || v.Code == "" || v.URL == "" || !slices.Equal(v.Approvers, []string{"bob"}) {
		t.Fatalf("a new task: %+v", v)
	}

	s.tap(t, "bob", v.ID, vocab.Deny)
	got, err := s.g.AwaitTask(ctx, v.ID, "agent-7", Settled)
	if err != nil {
		t.Fatal(err)
	}
	same(got)
	if got.State != vocab.StateDenied || !strings.Contains(got.Outcome, "denied by bob") {
		t.Fatalf("a denied task: %+v", got)
	}
	listed, err := s.g.Tasks(ctx, "agent-7", "", 10)
	if err != nil || len(listed) != 1 {
		t.Fatalf("tasks: %v %v", listed, err)
	}
	same(listed[0])
	if c.count() != 0 {
		t.Errorf("a denied task ran %d times", c.count())
	}
}
