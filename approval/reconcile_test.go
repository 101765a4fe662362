package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/reconcile"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
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
	const why = "outcome unknown: upstream notes: connection lost"
	err := svc.Finish(ctx, r.ID, Outcome{State: vocab.StateInterrupted, Note: why, Result: json.RawMessage(`{"error":"interrupted"}`),
		Record: audit.Entry{Kind: vocab.KindCallInterrupted, Agent: r.Agent, Tool: r.Tool, Args: args.JSON(),
			ArgsSHA256: args.Hex(), Decision: string(r.Level), Reason: why}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReconcileRecordsAFindingOnceAndOnlyForAnInterruptedCall(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f, log, key := loggedFixtureOn(t, db)
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		approved := func() *Request {
			t.Helper()
			r, err := f.svc.Create(ctx, paymentRequest("alice"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.decide(t, r.ID, vocab.Approve, alice); err != nil {
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
		}{{done, reconcile.ErrNotInterrupted}, {pending, reconcile.ErrNotInterrupted}} {
			if _, err := f.svc.Reconcile(ctx, c.r.ID, reconcile.Finding{Ran: true, By: "admin"}); !errors.Is(err, c.want) {
				t.Errorf("reconcile a %s request: %v, want %v", c.r.State, err, c.want)
			}
		}
		if _, err := f.svc.Reconcile(ctx, "no-such-request", reconcile.Finding{Ran: true, By: "admin"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown request: %v", err)
		}
		if _, err := f.svc.Reconcile(ctx, lost.ID, reconcile.Finding{Ran: true}); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("a finding without who: %v", err)
		}

		if open, err := f.svc.Unreconciled(ctx); err != nil || len(open) != 1 || open[0].ID != lost.ID {
			t.Fatalf("unreconciled before: %v (%v)", open, err)
		}
		r, err := f.svc.Reconcile(ctx, lost.ID, reconcile.Finding{Ran: true, By: "admin (ops-jo)", Note: "the note is on the server"})
		if err != nil {
			t.Fatal(err)
		}
		const finding = "reconciled: ran, reconciled by admin (ops-jo): the note is on the server"
		if r.State != vocab.StateInterrupted || !strings.HasSuffix(r.Reason, "; "+finding) {
			t.Fatalf("after reconcile: %s %q", r.State, r.Reason)
		}
		if _, err := f.svc.Reconcile(ctx, lost.ID, reconcile.Finding{Ran: false, By: "someone else"}); !errors.Is(err, reconcile.ErrReconciled) {
			t.Errorf("second reconcile: %v", err)
		}
		if open, err := f.svc.Unreconciled(ctx); err != nil || len(open) != 0 {
			t.Errorf("unreconciled after: %v (%v)", open, err)
		}
		if err := f.svc.BeginExecution(ctx, lost.ID); !errors.Is(err, ErrNotApproved) {
			t.Errorf("an interrupted request claimed again: %v", err)
		}

		export, _ := verifiedExport(t, log)
		var kinds []vocab.Kind
		for _, e := range exportEntries(t, export) {
			if e.RequestID == lost.ID {
				kinds = append(kinds, e.Kind)
				if e.Kind == vocab.KindCallReconciled && e.Reason != finding {
					t.Errorf("call.reconciled reason %q", e.Reason)
				}
			}
		}
		want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved,
			vocab.KindCallInterrupted, vocab.KindCallReconciled}
		if !slices.Equal(kinds, want) {
			t.Fatalf("log of the interrupted request %v, want %v", kinds, want)
		}

		// The verifier refuses a finding about a call that was not
		// interrupted, and a second finding.
		entries := exportEntries(t, export)
		var rec audit.Entry
		for _, e := range entries {
			if e.Kind == vocab.KindCallReconciled {
				rec = e
			}
		}
		for name, forge := range map[string]func(audit.Entry) audit.Entry{
			"whose call was not interrupted": func(e audit.Entry) audit.Entry { e.RequestID = done.ID; return e },
			"already reconciled":             func(e audit.Entry) audit.Entry { return e },
		} {
			forged := append(slices.Clone(entries), forge(rec))
			_, err := verify.Export(bytes.NewReader(resignExport(t, key, forged)), log.PublicKey(), verify.Options{})
			var ve *verify.Error
			if !errors.As(err, &ve) || !strings.Contains(ve.Reason, name) {
				t.Errorf("forged call.reconciled %s: %v", name, err)
			}
		}
	})
}

// A call that had no request (a routine call) is reconciled by the seq of
// its call.interrupted entry, once, and only when it was interrupted; the
// same seq form names a request's interrupted call too.
func TestReconcileCallWithoutARequestBySeq(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f, log, _ := loggedFixtureOn(t, db)
		args := digest.MustParseArgs(`{"name":"late","text":"x"}`)
		call := audit.Entry{Agent: "agent-a", Tool: "hostile__stubborn", ArgsSHA256: args.Hex(), Decision: string(vocab.LevelLow)}
		appendCall := func(outcome vocab.Kind) int64 {
			t.Helper()
			allowed := call
			allowed.Kind, allowed.Args = vocab.KindCallAllowed, args.JSON()
			a, err := log.Append(ctx, allowed)
			if err != nil {
				t.Fatal(err)
			}
			out := call
			out.Kind, out.ArgsSeq, out.Reason = outcome, a.Seq, "outcome unknown: no answer within call_timeout"
			e, err := log.Append(ctx, out)
			if err != nil {
				t.Fatal(err)
			}
			return e.Seq
		}
		lost := appendCall(vocab.KindCallInterrupted)
		done := appendCall(vocab.KindCallExecuted)

		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		r, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, r.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		interrupted(t, f.svc, r)
		var requestSeq int64
		all, _ := log.Interrupted(ctx)
		for _, e := range all {
			if e.RequestID == r.ID {
				requestSeq = e.Seq
			}
		}
		if requestSeq == 0 {
			t.Fatalf("no call.interrupted of request %s among %+v", r.ID, all)
		}

		if open, err := f.svc.UnreconciledCalls(ctx); err != nil || len(open) != 1 || open[0].Seq != lost {
			t.Fatalf("unreconciled calls before: %+v (%v)", open, err)
		}
		finding := reconcile.Finding{Ran: true, By: "admin (ops-jo)"}
		for _, c := range []struct {
			seq  int64
			f    reconcile.Finding
			want error
		}{{done, finding, reconcile.ErrNotInterrupted}, {1, finding, reconcile.ErrNotInterrupted}, {999, finding, ErrNotFound}, {0, finding, ErrNotFound},
			{lost, reconcile.Finding{Ran: true}, ErrInvalidRequest}} {
			if _, err := f.svc.ReconcileCall(ctx, c.seq, c.f); !errors.Is(err, c.want) {
				t.Errorf("reconcile #%d: %v, want %v", c.seq, err, c.want)
			}
		}

		// Two people at once: one finding is recorded.
		results := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := f.svc.ReconcileCall(ctx, lost, reconcile.Finding{Ran: true, By: "admin (ops-jo)", Note: "the note is upstream"})
				results <- err
			}()
		}
		var ok, refused int
		for range 2 {
			switch err := <-results; {
			case err == nil:
				ok++
			case errors.Is(err, reconcile.ErrReconciled):
				refused++
			default:
				t.Errorf("concurrent reconcile: %v", err)
			}
		}
		if ok != 1 || refused != 1 {
			t.Fatalf("concurrent reconciles: %d recorded, %d refused", ok, refused)
		}
		if _, err := f.svc.ReconcileCall(ctx, lost, reconcile.Finding{Ran: false, By: "someone else"}); !errors.Is(err, reconcile.ErrReconciled) {
			t.Errorf("second reconcile: %v", err)
		}
		if open, err := f.svc.UnreconciledCalls(ctx); err != nil || len(open) != 0 {
			t.Errorf("unreconciled calls after: %+v (%v)", open, err)
		}

		// #SEQ of a request's call reconciles the request.
		e, err := f.svc.ReconcileCall(ctx, requestSeq, reconcile.Finding{Ran: false, By: "admin"})
		if err != nil || e.RequestID != r.ID || e.InterruptedSeq != 0 {
			t.Fatalf("reconcile the request's call by seq: %+v (%v)", e, err)
		}
		if open, err := f.svc.Unreconciled(ctx); err != nil || len(open) != 0 {
			t.Errorf("unreconciled requests after: %v (%v)", open, err)
		}
		if _, err := f.svc.Reconcile(ctx, r.ID, reconcile.Finding{Ran: true, By: "admin"}); !errors.Is(err, reconcile.ErrReconciled) {
			t.Errorf("the request reconciled again by its id: %v", err)
		}

		export, _ := verifiedExport(t, log)
		var findings []audit.Entry
		for _, e := range exportEntries(t, export) {
			if e.Kind == vocab.KindCallReconciled {
				findings = append(findings, e)
			}
		}
		want := "reconciled: ran, reconciled by admin (ops-jo): the note is upstream"
		if len(findings) != 2 || findings[0].InterruptedSeq != lost || findings[0].RequestID != "" || findings[0].Reason != want ||
			findings[0].Tool != call.Tool || findings[0].ArgsSHA256 != call.ArgsSHA256 || findings[1].RequestID != r.ID {
			t.Fatalf("call.reconciled entries %+v", findings)
		}
	})
}
