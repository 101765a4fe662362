package approval

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// cliService opens the data directory of f a second time, as the
// `countersign agents` command does from another process: its own
// database handle, audit log and approval service.
func cliService(t *testing.T, f *fixture) *Service {
	t.Helper()
	ctx := context.Background()
	db := storetest.Connect(t, filepath.Join(f.dir, store.FileName))
	key, err := audit.LoadOrCreateKey(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditpg.Open(ctx, db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	svc, err := New(ctx, db, log, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// grantRequest is a payment whose approver may grant further ones.
func grantRequest(agent string) NewRequest {
	r := paymentRequest("alice")
	r.Agent = agent
	r.Grant = &grant.Offer{Condition: `agent == "` + agent + `" && args.amount <= 500000`, MaxDuration: 10 * time.Minute, MaxCalls: 3}
	return r
}

// A freeze written by another process (the CLI) holds in the serving
// process at once: the agent's pending request is cancelled and its
// waiter returns, its grant is revoked, it can raise nothing, and its
// approved request that had not started never runs. Another agent goes
// on. Unfreeze lets it raise requests again. The log, with agent.frozen,
// agent.unfrozen and everything the freeze ended, verifies offline.
func TestFreezeFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	f, log, _ := newLoggedFixture(t)
	svc := f.svc
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)

	// agent-1 holds a grant, an approved request not yet run, and a
	// pending request someone waits on; agent-2 has a pending request.
	granted, err := svc.Create(ctx, grantRequest("agent-1"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := svc.BeginGrant(ctx, granted.ID, grant.Choice{Duration: 5 * time.Minute, Calls: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := svc.FinishDecision(ctx, granted.ID, opts.Ceremony, alice.Get(opts.PublicKey.Challenge.String())); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve with grant: %v %+v", err, r)
	}
	ran(t, svc, log, granted)
	approved, _ := svc.Create(ctx, withAgent(paymentRequest("alice"), "agent-1"))
	if r, err := f.decide(t, approved.ID, vocab.Approve, alice); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve: %v %+v", err, r)
	}
	waiting, _ := svc.Create(ctx, withAgent(paymentRequest("alice"), "agent-1"))
	other, _ := svc.Create(ctx, withAgent(paymentRequest("alice"), "agent-2"))
	waited := make(chan *Request, 1)
	go func() {
		r, err := svc.Wait(ctx, waiting.ID)
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()

	cli := cliService(t, f)
	stopped, err := cli.FreezeAgent(ctx, "agent-1", "cli:tester", "incident 42")
	if err != nil {
		t.Fatal(err)
	}
	grants, _ := svc.Grants(ctx, 10)
	if len(stopped.Cancelled) != 1 || stopped.Cancelled[0] != waiting.ID || len(stopped.Revoked) != 1 || stopped.Revoked[0] != grants[0].ID {
		t.Fatalf("the freeze ended %+v; want request %s cancelled and grant %s revoked", stopped, waiting.ID, grants[0].ID)
	}

	// The waiter returns without waiting for its periodic re-read: the
	// serving process notices the freeze (watchFreezes) and wakes it.
	select {
	case r := <-waited:
		if r.State != vocab.StateCancelled || !strings.Contains(r.Reason, "agent agent-1 frozen by cli:tester") {
			t.Fatalf("the waiting request ended %s: %q", r.State, r.Reason)
		}
	case <-time.After(rereadEvery - time.Second):
		t.Fatal("the waiting call did not return before its periodic re-read")
	}
	fz, err := svc.Frozen(ctx, "agent-1")
	if err != nil || fz == nil || fz.By != "cli:tester" || fz.Reason != "incident 42" {
		t.Fatalf("Frozen(agent-1) = %+v, %v", fz, err)
	}
	if fz, _ := svc.Frozen(ctx, "agent-2"); fz != nil {
		t.Fatalf("agent-2 is frozen too: %+v", fz)
	}
	if gs, _ := svc.ActiveGrants(ctx, "agent-1", "transfer"); len(gs) != 0 {
		t.Fatalf("grants still in force: %+v", gs)
	}
	if _, err := svc.UseGrant(ctx, grants[0].ID); !errors.Is(err, grant.ErrGrantSpent) {
		t.Fatalf("a use of the revoked grant: %v", err)
	}
	_, err = svc.Create(ctx, withAgent(paymentRequest("alice"), "agent-1"))
	var fe *freeze.FrozenError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "agent agent-1 is frozen by cli:tester since ") ||
		!strings.Contains(err.Error(), "`countersign agents unfreeze agent-1`") {
		t.Fatalf("a request of the frozen agent: %v", err)
	}
	// Approved before the freeze, not started: it never runs.
	if err := svc.BeginExecution(ctx, approved.ID); !errors.Is(err, freeze.ErrAgentFrozen) {
		t.Fatalf("claiming the approved request: %v", err)
	}
	if r, _ := svc.Get(ctx, approved.ID); r.State != vocab.StateFailed || !strings.Contains(r.Reason, "not run: agent agent-1 is frozen") {
		t.Fatalf("the approved request after the refused claim: %s %q", r.State, r.Reason)
	}
	// Freezing it again changes nothing, and says by whom it is frozen.
	if _, err := svc.FreezeAgent(ctx, "agent-1", LoopbackRevoker, ""); !errors.As(err, &fe) || fe.Freeze.By != "cli:tester" {
		t.Fatalf("a second freeze: %v", err)
	}

	// agent-2 goes on.
	if r, err := f.decide(t, other.ID, vocab.Approve, alice); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve agent-2's request: %v %+v", err, r)
	}
	ran(t, svc, log, other)

	if err := cli.UnfreezeAgent(ctx, "agent-1", "cli:tester", ""); err != nil {
		t.Fatal(err)
	}
	if err := cli.UnfreezeAgent(ctx, "agent-1", "cli:tester", ""); !errors.Is(err, freeze.ErrNotFrozen) {
		t.Fatalf("a second unfreeze: %v", err)
	}
	again, err := svc.Create(ctx, withAgent(paymentRequest("alice"), "agent-1"))
	if err != nil {
		t.Fatalf("a request after the unfreeze: %v", err)
	}
	svc.Cancel(ctx, again.ID, "test over")

	export, _ := verifiedExport(t, log)
	var frozen, unfrozen, failed int
	for _, e := range exportEntries(t, export) {
		switch {
		case e.Kind == vocab.KindAgentFrozen && e.Agent == "agent-1" && e.Approver == "cli:tester" && e.Reason == "frozen: incident 42":
			frozen++
		case e.Kind == vocab.KindAgentUnfrozen && e.Agent == "agent-1" && e.Approver == "cli:tester":
			unfrozen++
		case e.Kind == vocab.KindCallFailed && e.RequestID == approved.ID && strings.HasPrefix(e.Reason, "not run: agent agent-1 is frozen"):
			failed++
		case e.Kind == vocab.KindGrantRevoked && (e.Approver != "cli:tester" || e.GrantSeq == 0):
			t.Errorf("grant.revoked: %+v", e)
		}
	}
	if frozen != 1 || unfrozen != 1 || failed != 1 {
		t.Fatalf("%d agent.frozen, %d agent.unfrozen, %d call.failed for the frozen approval:\n%s", frozen, unfrozen, failed, export)
	}
}

func withAgent(r NewRequest, agent string) NewRequest {
	r.Agent = agent
	return r
}

// Freeze lands between the page's load and the tap: the tap is refused
// and nothing is approved. If a pending request of a frozen agent escaped
// the freeze's cancellation (its entries were in another process's
// outbox), the decision is refused by the freeze itself.
func TestFreezeRefusesATapAfterIt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)

	r, _ := f.svc.Create(ctx, paymentRequest("alice"))
	ceremony, resp := f.sign(t, r.ID, vocab.Approve, alice) // the page, before the freeze
	if _, err := f.svc.FreezeAgent(ctx, "agent-1", "alice", ""); err != nil {
		t.Fatal(err)
	}
	if got, err := f.svc.FinishDecision(ctx, r.ID, ceremony, resp); err == nil {
		t.Fatalf("a tap after the freeze approved %+v", got)
	}
	if got, _ := f.svc.Get(ctx, r.ID); got.State != vocab.StateCancelled {
		t.Fatalf("request %s after the freeze and tap", got.State)
	}

	// The escaped request: pending while its agent is frozen. (A fresh
	// service, whose freezes only this test writes: its watcher, which
	// acts on a freeze recorded as such, leaves the row inserted below
	// to enforceFreezes, called last.)
	f = newFixture(t)
	f.enroll(t, "alice", alice)
	r2, _ := f.svc.Create(ctx, paymentRequest("alice"))
	ceremony, resp = f.sign(t, r2.ID, vocab.Approve, alice)
	if _, err := f.db.Exec(`INSERT INTO agent_freezes (agent, frozen_by, frozen_at) VALUES ('*', 'cli:root', ?)`, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.BeginDecision(ctx, r2.ID, vocab.Deny); !errors.Is(err, ErrFrozenCheck) {
		t.Fatalf("begin a decision while every agent is frozen: %v", err)
	}
	if _, err := f.svc.FinishDecision(ctx, r2.ID, ceremony, resp); !errors.Is(err, ErrFrozenCheck) || !strings.Contains(err.Error(), "all agents are frozen by cli:root") {
		t.Fatalf("a tap while every agent is frozen: %v", err)
	}
	if got, _ := f.svc.Get(ctx, r2.ID); got.State != vocab.StatePending || len(got.Approvals) != 0 {
		t.Fatalf("request %s with approvals %v", got.State, got.Approvals)
	}
	f.rec.RequireRejected(t, ErrFrozenCheck.Check)
	// The serving process ends it once it looks (watchFreezes does on the
	// next change; here, directly).
	if err := f.svc.enforceFreezes(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.svc.Get(ctx, r2.ID); got.State != vocab.StateCancelled || got.Reason != "all agents frozen by cli:root" {
		t.Fatalf("request %s (%q) after enforceFreezes", got.State, got.Reason)
	}
}
