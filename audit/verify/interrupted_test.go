package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// A call.interrupted entry (the server stopped while an approved call ran)
// counts as the request's one run: it verifies in place of call.executed,
// and nothing may run the request after it.
func TestInterruptedRunIsTheOneRun(t *testing.T) {
	dir := t.TempDir()
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubText(key)
	export := exampleExport(t, dir, key)
	failedSeq := int64(0)
	lines, _ := splitExport(t, export)
	for i, line := range lines {
		if bytes.Contains(line, []byte(`"kind":"call.failed"`)) {
			failedSeq = int64(i + 1)
		}
	}
	if failedSeq == 0 {
		t.Fatal("the example log has no call.failed")
	}
	interrupted := forge(t, export, key, at(failedSeq, func(e *audit.Entry) {
		e.Kind, e.Reason, e.PolicySHA256 = vocab.KindCallInterrupted, "the server stopped while this ran", "" // not a decision
	}))
	if _, err := Export(bytes.NewReader(interrupted), pub, Options{}); err != nil {
		t.Fatalf("an interrupted run in place of the failure: %v", err)
	}
	ranAgain := forge(t, interrupted, key, func(es []audit.Entry) []audit.Entry {
		again := es[failedSeq-1]
		again.Kind, again.Reason, again.PolicySHA256 = vocab.KindCallExecuted, "", es[0].PolicySHA256 // the policy.loaded one
		return append(es[:failedSeq:failedSeq], append([]audit.Entry{again}, es[failedSeq:]...)...)
	})
	_, err = Export(bytes.NewReader(ranAgain), pub, Options{})
	var ve *Error
	if !errors.As(err, &ve) || ve.Seq != failedSeq+1 || !strings.Contains(ve.Reason, "already ran") {
		t.Fatalf("a run after the interrupted one: %v", err)
	}
}

// A call without a request (routine, or let through by a grant) whose
// outcome is unknown is reconciled by the seq of its call.interrupted: the
// finding must name such an entry, repeat its call, and come once.
func TestReconciledCallWithoutARequest(t *testing.T) {
	key := seededKey(1)
	pub := pubText(key)
	args := json.RawMessage(`{"name":"late","text":"x"}`)
	sum, err := audit.ArgsSHA256(args)
	if err != nil {
		t.Fatal(err)
	}
	argsSum := hex.EncodeToString(sum[:])
	call := audit.Entry{Agent: "agent-a", Tool: "hostile__stubborn", ArgsSHA256: argsSum, Decision: string(vocab.LevelLow)}
	with := func(kind vocab.Kind, edit func(*audit.Entry)) audit.Entry {
		e := call
		e.Kind = kind
		edit(&e)
		return e
	}
	l := openLogWith(t, key, []audit.Entry{
		with(vocab.KindCallAllowed, func(e *audit.Entry) { e.Args = args }),                                                // 1
		with(vocab.KindCallInterrupted, func(e *audit.Entry) { e.ArgsSeq, e.Reason = 1, "outcome unknown: call_timeout" }), // 2
		with(vocab.KindCallAllowed, func(e *audit.Entry) { e.Args = args }),                                                // 3
		with(vocab.KindCallExecuted, func(e *audit.Entry) { e.ArgsSeq = 3 }),                                               // 4
		{Kind: vocab.KindCallReconciled, Agent: call.Agent, Tool: call.Tool, ArgsSHA256: argsSum, InterruptedSeq: 2,
			Reason: "reconciled: ran, reconciled by jo"}, // 5
	})
	got, err := l.Interrupted(context.Background())
	if err != nil || len(got) != 1 || got[0].Seq != 2 || got[0].Kind != vocab.KindCallInterrupted {
		t.Fatalf("Interrupted: %+v (%v)", got, err)
	}
	export := exportBytes(t, l, 0)
	if _, err := Export(bytes.NewReader(export), pub, Options{}); err != nil {
		t.Fatalf("a reconciled routine call: %v", err)
	}

	again := func(edit func(*audit.Entry)) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			e := es[4]
			edit(&e)
			return append(es, e)
		}
	}
	for _, c := range []struct {
		name   string
		edit   func([]audit.Entry) []audit.Entry
		seq    int64
		reason string
	}{
		{"a second finding", again(func(*audit.Entry) {}), 6, "the call interrupted at seq 2 was already reconciled at seq 5"},
		{"a finding about a call that ran", at(5, func(e *audit.Entry) { e.InterruptedSeq = 4 }), 5,
			"seq 4, which is not the call.interrupted of a call without a request"},
		{"a finding about another call", at(5, func(e *audit.Entry) { e.Tool = "transfer" }), 5, "agent, tool or args_sha256 differ"},
		{"a finding naming a later entry", at(5, func(e *audit.Entry) { e.InterruptedSeq = 5 }), 5, "names neither a request nor an earlier call"},
		{"a finding naming nothing", at(5, func(e *audit.Entry) { e.InterruptedSeq = 0 }), 5, "names neither a request nor an earlier call"},
		{"a finding naming a request too", at(5, func(e *audit.Entry) { e.RequestID = "5f2b6c1e-8d0e-4c1b-9f3a-2b7c1d0e9a11" }), 5,
			"names both request_id and interrupted_seq"},
		{"interrupted_seq on an outcome", at(4, func(e *audit.Entry) { e.InterruptedSeq = 2 }), 4, "only call.reconciled does"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantVerifyErr(t, forge(t, export, key, c.edit), pub, nil, c.seq, c.reason)
		})
	}
}
