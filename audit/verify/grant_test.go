package verify

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"slices"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// grantEntries continue the example log (24 entries) with a standing grant:
//
//	25 approval.requested  req-G: high, 1 of alice, bob
//	26 approval.assertion  alice, approving req-G with grant G1 (2 calls, until 09:45)
//	27 approval.approved   req-G
//	28 call.executed       req-G
//	29 call.allowed, 30 call.executed   under G1 (400,000 to Vendor X)
//	31 grant.revoked       G1, by bob
func grantEntries(t *testing.T, k exampleKeys) []audit.Entry {
	const uv = flagUserPresent | flagUserVerified
	req := requested("req-G", vocab.LevelHigh, 1, vocab.UVPreferred, "alice", "bob")
	assertion := requestFields("req-G")
	assertion.Kind, assertion.Decision, assertion.DecidedAt = vocab.KindApprovalAssertion, string(vocab.Approve), "2026-03-01T09:31:00.000000000Z"
	assertion.GrantID, assertion.GrantMaxCalls, assertion.GrantExpiresAt = "G1", 2, "2026-03-01T09:45:00Z"
	assertion.GrantCondition = `agent == "agent-1" && tool == "transfer" && args.to == "Vendor X" && args.amount <= 500000 && ` +
		`args.all(k, k in ["amount", "currency", "to"])`
	k.alice.sign(&assertion, origin, rpID, uv)
	approved := requestFields("req-G")
	approved.Kind, approved.Decision, approved.Approvers, approved.Assertions = vocab.KindApprovalApproved, string(vocab.Approve), []string{"alice"}, []int64{26}
	ran := requestFields("req-G")
	ran = audit.Entry{Kind: vocab.KindCallExecuted, Agent: ran.Agent, Tool: ran.Tool, Args: ran.Args, ArgsSHA256: ran.ArgsSHA256, Decision: string(vocab.LevelHigh), RequestID: "req-G"}
	args := json.RawMessage(`{"to":"Vendor X","amount":400000,"currency":"USD"}`)
	sum, _ := digest.ArgsSHA256(args)
	allowed := audit.Entry{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "transfer", Args: args, ArgsSHA256: hex.EncodeToString(sum[:]),
		Decision: string(vocab.LevelHigh), GrantID: "G1", GrantSeq: 26, DecidedAt: "2026-03-01T09:32:00.000000000Z"}
	executed := allowed
	executed.Kind, executed.DecidedAt = vocab.KindCallExecuted, ""
	revoked := audit.Entry{Kind: vocab.KindGrantRevoked, Agent: "agent-1", Tool: "transfer", GrantID: "G1", GrantSeq: 26, Approver: "bob",
		DecidedAt: "2026-03-01T09:33:00.000000000Z", Reason: "revoked on the approver page after 1 of 2 calls"}
	return []audit.Entry{req, assertion, approved, ran, allowed, executed, revoked}
}

func TestVerifyChecksGrants(t *testing.T) {
	dir := t.TempDir()
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubText(key)
	keys := newExampleKeys(t)
	l := openLog(t, storetest.Open(t, dir), key, audit.Options{Now: stepClock()})
	for _, e := range append(exampleEntries(t, keys), grantEntries(t, keys)...) {
		appendExample(t, l, e)
	}
	export := exportBytes(t, l, 0)
	s, err := Export(bytes.NewReader(export), pub, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.GrantCalls != 1 || s.Approvals != 3 {
		t.Fatalf("summary %+v", s)
	}

	withArgs := func(e *audit.Entry, args string) {
		e.Args = json.RawMessage(args)
		sum, _ := digest.ArgsSHA256(e.Args)
		e.ArgsSHA256 = hex.EncodeToString(sum[:])
	}
	insert := func(at int, seqs ...int64) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			var xs []audit.Entry
			for _, seq := range seqs {
				xs = append(xs, es[seq-1])
			}
			return slices.Insert(es, at, xs...)
		}
	}
	cases := []struct {
		name   string
		edit   func([]audit.Entry) []audit.Entry
		seq    int64
		reason string
	}{
		{"a call after the revocation", func(es []audit.Entry) []audit.Entry {
			es[30].DecidedAt = "2026-03-01T09:31:30.000000000Z"
			return append(es[:28], es[30], es[28], es[29])
		}, 30, "after grant G1 was revoked at seq 29"},
		{"more calls than the grant allows", insert(30, 29, 30, 29), 33, "grant G1 allows 2 calls; this is one more"},
		{"a call the condition does not cover (higher amount)", at(29, func(e *audit.Entry) {
			withArgs(e, `{"amount":500001,"currency":"USD","to":"Vendor X"}`)
		}), 29, "do not satisfy grant G1's condition"},
		{"a call the condition does not cover (another payee)", at(29, func(e *audit.Entry) {
			withArgs(e, `{"amount":1,"currency":"USD","to":"Mallory"}`)
		}), 29, "do not satisfy grant G1's condition"},
		{"a call of another agent", at(29, func(e *audit.Entry) { e.Agent = "agent-2" }), 29, "granted call by agent-2 of transfer"},
		{"a call after the grant expired", at(29, func(e *audit.Entry) { e.DecidedAt = "2026-03-01T09:45:00.000000000Z" }), 29, "after grant G1 expired at 2026-03-01T09:45:00Z"},
		{"a call at critical", at(29, func(e *audit.Entry) { e.Decision = string(vocab.LevelCritical) }), 29, "a grant covers calls at level high only"},
		{"a call with its arguments redacted", at(29, func(e *audit.Entry) { e.Args, e.ArgsRedact = nil, true }), 29, "condition cannot be checked"},
		{"a call naming another approval", at(29, func(e *audit.Entry) { e.GrantSeq = 8 }), 29, "grant_seq 8 is not the approval.assertion that created grant G1 (seq 26)"},
		{"a call naming an unknown grant", at(29, func(e *audit.Entry) { e.GrantID = "G9" }), 29, "names grant G9, which no earlier approval created"},
		{"a grant whose request was never approved", func(es []audit.Entry) []audit.Entry { return without(es, 27, 28) }, 27, "grant G1 was never in force"},
		{"an outcome without its granted call.allowed", func(es []audit.Entry) []audit.Entry { return without(es, 29) }, 29, "follows no call.allowed"},
		{"the grant's limits raised after the tap", at(26, func(e *audit.Entry) { e.GrantMaxCalls = 50 }), 26, "challenge is not the grant digest"},
		{"the grant's condition widened after the tap", at(26, func(e *audit.Entry) { e.GrantCondition = "true" }), 26, "challenge is not the grant digest"},
		{"a grant on a critical request", at(25, func(e *audit.Entry) { e.Level, e.UserVerification = vocab.LevelCritical, vocab.UVRequired }), 26, "grants cover high requests with one approver only"},
		{"grant terms on a call", at(29, func(e *audit.Entry) { e.GrantMaxCalls = 5 }), 29, "carries a grant's condition or limits"},
		{"a revocation of an unknown grant", at(31, func(e *audit.Entry) { e.GrantID = "G9" }), 31, "names grant G9"},
		{"a revocation twice", func(es []audit.Entry) []audit.Entry { return append(es, es[30]) }, 32, "grant G1 was already revoked at seq 31"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantVerifyErr(t, forge(t, export, key, tc.edit), pub, nil, tc.seq, tc.reason)
		})
	}
}
