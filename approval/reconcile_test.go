package approval

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
)

// interrupted claims an approved request and ends it interrupted, with the
// call.interrupted record, as the guard does when an upstream call was
// sent and never answered.
func interrupted(t *testing.T, svc *Service, r *Request) {
	t.Helper()
	ctx := context.Background()
	if err := svc.BeginExecution(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	args := paymentRequest().Args
	sum, _ := digest.ArgsSHA256(args)
	const why = "outcome unknown: upstream notes: connection lost"
	err := svc.Finish(ctx, r.ID, Outcome{State: StateInterrupted, Note: why, Result: json.RawMessage(`{"error":"interrupted"}`),
		Record: audit.Entry{Kind: audit.KindCallInterrupted, Agent: r.Agent, Tool: r.Tool, Args: args,
			ArgsSHA256: hex.EncodeToString(sum[:]), Decision: r.Level, Reason: why}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReconcileRecordsAFindingOnceAndOnlyForAnInterruptedCall(t *testing.T) {
	ctx := context.Background()
	f, log, key := newLoggedFixture(t)
	alice := newSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)
	approved := func() *Request {
		t.Helper()
		r, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, r.ID, digest.Approve, alice); err != nil {
			t.Fatal(err)
		}
		return r
	}
	lost, done, pending := approved(), approved(), approved()
	interrupted(t, f.svc, lost)
	ran(t, f.svc, log, done)
	pending, _ = f.svc.Get(ctx, pending.ID)

	for _, c := range []struct {
		r    *Request
		want error
	}{{done, ErrNotInterrupted}, {pending, ErrNotInterrupted}} {
		if _, err := f.svc.Reconcile(ctx, c.r.ID, Finding{Ran: true, By: "admin"}); !errors.Is(err, c.want) {
			t.Errorf("reconcile a %s request: %v, want %v", c.r.State, err, c.want)
		}
	}
	if _, err := f.svc.Reconcile(ctx, "no-such-request", Finding{Ran: true, By: "admin"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown request: %v", err)
	}
	if _, err := f.svc.Reconcile(ctx, lost.ID, Finding{Ran: true}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("a finding without who: %v", err)
	}

	if open, err := f.svc.Unreconciled(ctx); err != nil || len(open) != 1 || open[0].ID != lost.ID {
		t.Fatalf("unreconciled before: %v (%v)", open, err)
	}
	r, err := f.svc.Reconcile(ctx, lost.ID, Finding{Ran: true, By: "admin (ops-jo)", Note: "the note is on the server"})
	if err != nil {
		t.Fatal(err)
	}
	const finding = "reconciled: ran, reconciled by admin (ops-jo): the note is on the server"
	if r.State != StateInterrupted || !strings.HasSuffix(r.Reason, "; "+finding) {
		t.Fatalf("after reconcile: %s %q", r.State, r.Reason)
	}
	if _, err := f.svc.Reconcile(ctx, lost.ID, Finding{Ran: false, By: "someone else"}); !errors.Is(err, ErrReconciled) {
		t.Errorf("second reconcile: %v", err)
	}
	if open, err := f.svc.Unreconciled(ctx); err != nil || len(open) != 0 {
		t.Errorf("unreconciled after: %v (%v)", open, err)
	}
	if err := f.svc.BeginExecution(ctx, lost.ID); !errors.Is(err, ErrNotApproved) {
		t.Errorf("an interrupted request claimed again: %v", err)
	}

	export, _ := verifiedExport(t, log)
	var kinds []string
	for _, e := range exportEntries(t, export) {
		if e.RequestID == lost.ID {
			kinds = append(kinds, e.Kind)
			if e.Kind == audit.KindCallReconciled && e.Reason != finding {
				t.Errorf("call.reconciled reason %q", e.Reason)
			}
		}
	}
	want := []string{audit.KindApprovalRequested, audit.KindApprovalAssertion, audit.KindApprovalApproved,
		audit.KindCallInterrupted, audit.KindCallReconciled}
	if !slices.Equal(kinds, want) {
		t.Fatalf("log of the interrupted request %v, want %v", kinds, want)
	}

	// The verifier refuses a finding about a call that was not
	// interrupted, and a second finding.
	entries := exportEntries(t, export)
	var rec audit.Entry
	for _, e := range entries {
		if e.Kind == audit.KindCallReconciled {
			rec = e
		}
	}
	for name, forge := range map[string]func(audit.Entry) audit.Entry{
		"whose call was not interrupted": func(e audit.Entry) audit.Entry { e.RequestID = done.ID; return e },
		"already reconciled":             func(e audit.Entry) audit.Entry { return e },
	} {
		forged := append(slices.Clone(entries), forge(rec))
		_, err := audit.Verify(bytes.NewReader(resignExport(t, key, forged)), log.PublicKey(), audit.VerifyOptions{})
		var ve *audit.VerifyError
		if !errors.As(err, &ve) || !strings.Contains(ve.Reason, name) {
			t.Errorf("forged call.reconciled %s: %v", name, err)
		}
	}
}
