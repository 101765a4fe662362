package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

var updateGolden = os.Getenv("AUDIT_UPDATE_GOLDEN") != ""

// The example log's approvers, with Ed25519 keys so that every assertion,
// and so the golden export, is reproducible.
type exampleKeys struct{ alice, bob, carol *softKey }

func newExampleKeys(t *testing.T) exampleKeys {
	return exampleKeys{newEdKey(t, "alice", 11), newEdKey(t, "bob", 12), newEdKey(t, "carol", 13)}
}

// exampleEntries is a log of everything Countersign records, in format 2,
// meeting every requirement:
//
//	 1 policy.loaded        (decisions below name it; it is not meant to
//	                        give them: replay is tested in cmd/countersign)
//	 2-4 approver.enrolled  alice, bob, carol
//	 5 call.allowed, 6 call.executed  get_balance at low
//	 7 approval.requested   req-A: transfer, critical, 2 of alice, bob, carol, UV required
//	 8 approval.assertion   alice (UV)
//	 9 approval.rejected    carol's assertion from a wrong origin
//	10 approval.assertion   bob (UV)
//	11 approval.approved    req-A by alice, bob: assertions 8, 10
//	12 call.executed        req-A, at critical
//	13 approval.requested   req-B: high, 1 of alice, bob
//	14 approval.denied      bob
//	15 call.denied, 16 call.rejected
//	17 approval.requested   req-C: read_secret (args redacted), 1 of carol
//	18 approval.expired     req-C
//	19 credential.revoked   carol's key
//	20 approval.requested   req-D: 1 of alice, UV preferred
//	21 approval.assertion   alice (no UV)
//	22 approval.approved    req-D by alice
//	23 call.failed          req-D, at high
//	24 enrollment.created   a link for dave
func exampleEntries(t *testing.T, k exampleKeys) []audit.Entry {
	const uv, up = flagUserPresent | flagUserVerified, flagUserPresent
	args := json.RawMessage(`{"to":"Vendor X & Söhne <ltd>","amount":500000,"currency":"USD","memo":"line` + "\u2028" + `break"}`)
	sum, _ := digest.ArgsSHA256(args)
	forRequest := func(kind vocab.Kind, id string) audit.Entry {
		e := requestFields(id)
		e.Kind, e.Args, e.ArgsSHA256 = kind, args, hex.EncodeToString(sum[:])
		return e
	}
	request := func(id string, level vocab.Level, quorum int, uvReq vocab.UserVerification, eligible ...string) audit.Entry {
		e := forRequest(vocab.KindApprovalRequested, id)
		e.Level, e.Rule, e.Quorum, e.Eligible, e.UserVerification = level, "tools.transfer.rules[1]", quorum, eligible, uvReq
		e.Reason = `binding message "Pay USD 500,000.00 to Vendor X (code 7KQ2MP)"`
		return e
	}
	decide := func(key *softKey, id string, decision vocab.Decision, flags byte) audit.Entry {
		e := forRequest(vocab.KindApprovalAssertion, id)
		e.Decision, e.DecidedAt = string(decision), "2026-03-01T09:31:00.000000000Z"
		if decision == vocab.Deny {
			e.Kind = vocab.KindApprovalDenied
		}
		key.sign(&e, origin, rpID, flags)
		return e
	}
	approved := func(id string, approvers []string, seqs ...int64) audit.Entry {
		e := forRequest(vocab.KindApprovalApproved, id)
		e.Decision, e.Approvers, e.Assertions = string(vocab.Approve), approvers, seqs
		e.Reason = "quorum reached"
		return e
	}
	ran := func(kind vocab.Kind, id, level string) audit.Entry {
		return audit.Entry{Kind: kind, Agent: "agent-1", Tool: "transfer", Args: args, ArgsSHA256: hex.EncodeToString(sum[:]),
			Decision: level, Rule: "tools.transfer.rules[1]", RequestID: id}
	}
	enrolled := func(key *softKey) audit.Entry {
		return audit.Entry{Kind: vocab.KindApproverEnrolled, Approver: key.approver, CredentialID: key.id, PublicKey: key.cose(),
			Origin: origin, RPID: rpID, UserVerified: true, Reason: "key 1 of " + key.approver + "; attestation none"}
	}

	rejected := forRequest(vocab.KindApprovalRejected, "req-A")
	rejected.Decision, rejected.RPID = string(vocab.Approve), rpID
	rejected.Reason = `origin: origin "http://evil.example" (cross-origin false) is not one of [http://localhost:8710]`

	executed := ran(vocab.KindCallExecuted, "req-A", "critical")
	executed.Result = json.RawMessage(`{"transfer_id":"t-1","status":"<booked>"}`)
	failed := ran(vocab.KindCallFailed, "req-D", "high")
	failed.Reason = "backend: connection refused"

	secret := forRequest(vocab.KindApprovalRequested, "req-C")
	secret.Tool, secret.Args, secret.ArgsRedact = "read_secret", json.RawMessage(`{"name":"db-password"}`), true
	secretSum, _ := digest.ArgsSHA256(secret.Args)
	secret.ArgsSHA256 = hex.EncodeToString(secretSum[:])
	secret.Level, secret.Quorum, secret.Eligible, secret.UserVerification = "high", 1, []string{"carol"}, vocab.UVPreferred
	secretExpired := secret
	secretExpired.Kind, secretExpired.Level, secretExpired.Quorum, secretExpired.Eligible, secretExpired.UserVerification = vocab.KindApprovalExpired, "", 0, nil, ""
	secretExpired.Reason = "nobody decided before expires_at"

	policy := json.RawMessage(`{"tools":{"transfer":{"level":"low","approvers":["role:treasury"],"rules":[` +
		`{"name":"large","when":"args.amount > 10000","level":"high"},{"when":"args.amount > 250000","level":"critical","quorum":2}]}},` +
		`"approvers":[{"id":"alice","roles":["treasury"]},{"id":"bob","roles":["treasury"]},{"id":"carol","roles":["treasury"]}],"default_timeout":"5m0s"}`)
	return []audit.Entry{
		{Kind: vocab.KindPolicyLoaded, Policy: policy},
		enrolled(k.alice), enrolled(k.bob), enrolled(k.carol),
		{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "get_balance", Args: json.RawMessage(`{}`), Decision: "low", Rule: "tools.get_balance"},
		{Kind: vocab.KindCallExecuted, Agent: "agent-1", Tool: "get_balance", Args: json.RawMessage(`{}`), ArgsSeq: 5, Decision: "low", Rule: "tools.get_balance",
			Result: json.RawMessage(`{"balance":"1200.50","currency":"EUR"}`)},
		request("req-A", "critical", 2, vocab.UVRequired, "alice", "bob", "carol"),
		decide(k.alice, "req-A", vocab.Approve, uv),
		rejected,
		decide(k.bob, "req-A", vocab.Approve, uv),
		approved("req-A", []string{"alice", "bob"}, 8, 10),
		executed,
		request("req-B", "high", 1, vocab.UVPreferred, "alice", "bob"),
		decide(k.bob, "req-B", vocab.Deny, up),
		{Kind: vocab.KindCallDenied, Agent: "agent-2", Tool: "run_command", Args: json.RawMessage(`{"cmd":"rm -rf /"}`), Decision: "deny", Rule: "tools.run_command.rules[2]", Reason: "denied by policy"},
		{Kind: vocab.KindCallRejected, Agent: "agent-2", Tool: "transfer", Reason: "args.amount: must be > 0"},
		secret,
		secretExpired,
		{Kind: vocab.KindCredentialRevoked, Approver: "carol", CredentialID: k.carol.id, PublicKey: k.carol.cose(), Reason: "lost"},
		request("req-D", "high", 1, vocab.UVPreferred, "alice"),
		decide(k.alice, "req-D", vocab.Approve, up),
		approved("req-D", []string{"alice"}, 21),
		failed,
		{Kind: vocab.KindEnrollmentCreated, Approver: "dave", ExpiresAt: "2026-03-01T09:40:00Z", Reason: "one-time enrollment link issued"},
	}
}

// exampleExport appends the example entries to a log in dir signed with
// key and exports it.
func exampleExport(t *testing.T, dir string, key ed25519.PrivateKey) []byte {
	t.Helper()
	l := openLog(t, storetest.Open(t, dir), key, audit.Options{Now: stepClock()})
	for _, e := range exampleEntries(t, newExampleKeys(t)) {
		appendExample(t, l, e)
	}
	return exportBytes(t, l, 0)
}

// appendExample appends e, through LoadPolicy for policy.loaded, so that
// later decisions name the policy.
func appendExample(t *testing.T, l *audit.Log, e audit.Entry) {
	t.Helper()
	if e.Kind == vocab.KindPolicyLoaded {
		if _, err := l.LoadPolicy(context.Background(), e.Policy); err != nil {
			t.Fatal(err)
		}
		return
	}
	mustAppend(t, l, e)
}

// testdata/audit/export-v3.jsonl pins the format 3 byte form: the example
// log, exported, must come out byte for byte the same, and verify.
// AUDIT_UPDATE_GOLDEN=1 rewrites it.
func TestGoldenExportFormat3(t *testing.T) {
	got := exampleExport(t, t.TempDir(), seededKey(1))
	golden := filepath.Join("..", "..", "testdata", "audit", "export-v3.jsonl")
	if updateGolden {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (AUDIT_UPDATE_GOLDEN=1 go test ./audit -run Golden writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("export differs from %s (set AUDIT_UPDATE_GOLDEN=1 if the format changed on purpose)\ngot:\n%s", golden, got)
	}
	verifyGolden(t, want)
	for _, frag := range []string{`"v":3,"kind"`, `Söhne <ltd>`, `"status":"<booked>"`, `line\u2028break`, `"eligible":["alice","bob","carol"]`, `"assertions":[8,10]`,
		`"policy_sha256":"`,
		// The args are stored once: the outcomes name where.
		`"kind":"call.executed","agent":"agent-1","tool":"get_balance","args_sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","args_seq":5,"decision"`,
		`"kind":"call.executed","agent":"agent-1","tool":"transfer","args_sha256":`} {
		if !bytes.Contains(want, []byte(frag)) {
			t.Errorf("golden export lacks %s", frag)
		}
	}
}

// testdata/audit/export-v2.jsonl is the same example log as written in
// format 2 (args repeated on every entry of a call), frozen: exports made
// before format 3 must still verify.
func TestGoldenExportFormat2StillVerifies(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "audit", "export-v2.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	verifyGolden(t, want)
	for _, frag := range []string{`"v":2,"kind"`, `"kind":"call.executed","agent":"agent-1","tool":"transfer","args":`} {
		if !bytes.Contains(want, []byte(frag)) {
			t.Errorf("golden export lacks %s", frag)
		}
	}
}

func verifyGolden(t *testing.T, export []byte) {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join("..", "..", "testdata", "audit", "server.pub"))
	if err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		s, err := Export(bytes.NewReader(export), string(pub), Options{AllSignatures: all})
		if err != nil {
			t.Fatalf("golden export does not verify: %v", err)
		}
		if s.Entries != 24 || s.Assertions != 4 || s.Approvals != 2 || s.Executions != 2 || s.Format1 != 0 {
			t.Fatalf("summary %+v", s)
		}
	}
}

// forge plays an attacker who holds the server key: edit gets the
// exported entries and returns the forged ones, which are renumbered from
// seq 1, linked, hashed, signed, and covered by a new signed checkpoint.
func forge(t *testing.T, export []byte, key ed25519.PrivateKey, edit func([]audit.Entry) []audit.Entry) []byte {
	t.Helper()
	entries := edit(decodeEntries(t, export))
	for i := range entries {
		entries[i].Seq = int64(i + 1)
	}
	return signChain(t, key, entries)
}

// at edits the entry at seq.
func at(seq int64, edit func(*audit.Entry)) func([]audit.Entry) []audit.Entry {
	return func(es []audit.Entry) []audit.Entry {
		edit(&es[seq-1])
		return es
	}
}

// without drops the entries at seqs.
func without(es []audit.Entry, seqs ...int64) []audit.Entry {
	return slices.DeleteFunc(es, func(e audit.Entry) bool { return slices.Contains(seqs, e.Seq) })
}

// Each forgery is made with the real server key, taken from the test's
// own data directory, so every hash, signature and checkpoint is valid:
// only the approval requirements can catch it.
func TestVerifyRefusesForgedApprovals(t *testing.T) {
	dir := t.TempDir()
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubText(key)
	keys := newExampleKeys(t)
	export := exampleExport(t, dir, key)
	if _, err := Export(bytes.NewReader(export), pub, Options{}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		edit   func([]audit.Entry) []audit.Entry
		seq    int64
		reason string
	}{
		{"assertion removed from a quorum, approval shortened to match", func(es []audit.Entry) []audit.Entry {
			es[10].Approvers, es[10].Assertions = []string{"alice"}, []int64{8}
			return without(es, 10)
		}, 10, "request req-A needs 2 distinct eligible approvers, approval.approved shows 1 (alice)"},
		{"assertion removed from a quorum, approval left as it was", func(es []audit.Entry) []audit.Entry {
			return without(es, 10)
		}, 10, "assertion seq 10 is not an earlier approval.assertion of request req-A"},
		{"approval naming one assertion twice", at(11, func(e *audit.Entry) {
			e.Approvers, e.Assertions = []string{"alice", "alice"}, []int64{8, 8}
		}), 11, "a second one by alice"},
		{"approval naming an assertion of another request", at(22, func(e *audit.Entry) {
			e.Assertions = []int64{8}
		}), 22, "assertion seq 8 is not an earlier approval.assertion of request req-D"},
		{"approvers that are not the assertions'", at(11, func(e *audit.Entry) {
			e.Approvers = []string{"alice", "carol"}
		}), 11, "approvers [alice, carol] are not the approvers of the assertions it lists [alice, bob]"},
		{"approver not eligible", at(7, func(e *audit.Entry) {
			e.Eligible = []string{"alice", "carol"}
		}), 10, `approver "bob" is not eligible for request req-A (eligible: alice, carol)`},
		{"missing UV where required (a tap without PIN)", at(8, func(e *audit.Entry) {
			keys.alice.sign(e, origin, rpID, flagUserPresent)
		}), 8, "request req-A requires user verification; alice's assertion has none"},
		{"UV claimed that the key did not report", at(21, func(e *audit.Entry) {
			e.UserVerified = true
		}), 21, "UV flag is not set"},
		{"UV required afterwards, on a request approved without", at(20, func(e *audit.Entry) {
			e.UserVerification = vocab.UVRequired
		}), 21, "request req-D requires user verification; alice's assertion has none"},
		{"assertion after expiry", at(10, func(e *audit.Entry) {
			e.DecidedAt = "2026-03-01T09:35:00.000000000Z"
		}), 10, "decided at 2026-03-01T09:35:00.000000000Z, after request req-A expired at 2026-03-01T09:35:00Z"},
		{"assertion over other terms than the request shows", at(7, func(e *audit.Entry) {
			e.Display = "Approve $5.00 transfer to Vendor X"
		}), 8, "the assertion's display differs from request req-A at seq 7"},
		{"quorum below what the eligible list allows", at(7, func(e *audit.Entry) { e.Quorum = 4 }), 7, "quorum 4 of 3 eligible approvers"},
		{"critical request without UV required", at(7, func(e *audit.Entry) { e.UserVerification = vocab.UVPreferred }), 7, "a critical request must require user verification"},
		{"execution without approval (request expired)", func(es []audit.Entry) []audit.Entry {
			x := es[11]
			x.RequestID, x.Decision = "req-C", "high"
			x.Tool, x.ArgsSHA256 = es[16].Tool, es[16].ArgsSHA256
			return slices.Insert(es, 18, x)
		}, 19, "call.executed of request req-C, which was not approved (ended at seq 18 by approval.expired)"},
		{"execution of an approved request by another agent", at(12, func(e *audit.Entry) {
			e.Agent = "agent-mallory"
		}), 12, `call.executed by agent "agent-mallory", but request req-A (seq 7) was raised by agent`},
		{"execution without any request", func(es []audit.Entry) []audit.Entry {
			x := es[11]
			x.RequestID = ""
			return append(es, x)
		}, 25, "call.executed of transfer at level critical without request_id: it ran without an approval"},
		{"execution of a request nobody raised", func(es []audit.Entry) []audit.Entry {
			x := es[11]
			x.RequestID = "req-Z"
			return append(es, x)
		}, 25, "names request req-Z, which no earlier approval.requested raised"},
		{"approved request run twice", func(es []audit.Entry) []audit.Entry {
			return append(es, es[11])
		}, 25, "request req-A already ran at seq 12"},
		{"execution before its approval", func(es []audit.Entry) []audit.Entry {
			es[10], es[11] = es[11], es[10]
			return es
		}, 11, "call.executed of request req-A, which was not approved (still pending)"},
		{"approved call run with other arguments", at(12, func(e *audit.Entry) {
			e.Args = json.RawMessage(`{"amount":900000,"currency":"USD","to":"Mallory"}`)
			s, _ := digest.ArgsSHA256(e.Args)
			e.ArgsSHA256 = hex.EncodeToString(s[:])
		}), 12, "call.executed is for other tool or arguments than the approved request req-A"},
		{"executed high call relabelled low", at(12, func(e *audit.Entry) {
			e.Decision, e.RequestID = "low", ""
		}), 12, "call.executed of transfer at level low runs the arguments of an approved request that has not run: an execution of it relabelled low"},
		{"executed critical call relabelled high", at(12, func(e *audit.Entry) {
			e.Decision = "high"
		}), 12, "call.executed at level high, but request req-A was raised at level critical"},
		{"execution without a level", at(6, func(e *audit.Entry) { e.Decision = "" }), 6, `call.executed of get_balance with decision "", want the level it ran at`},
		{"an exact repeat of a denial, as a crash can leave", func(es []audit.Entry) []audit.Entry {
			return append(es, es[13])
		}, 0, ""},
		{"a decision after the request ended", func(es []audit.Entry) []audit.Entry {
			x := es[13]
			x.Kind, x.Decision = vocab.KindApprovalAssertion, string(vocab.Approve)
			keys.alice.sign(&x, origin, rpID, flagUserPresent)
			return slices.Insert(es, 19, x)
		}, 20, "approval.assertion for request req-B, which already ended at seq 14 (approval.denied)"},
		{"an approval of a denied request", func(es []audit.Entry) []audit.Entry {
			x := es[10]
			x.RequestID = "req-B"
			return slices.Insert(es, 14, x)
		}, 15, "approval.approved for request req-B, which already ended at seq 14 (approval.denied)"},
		{"request raised twice", func(es []audit.Entry) []audit.Entry {
			x := es[6]
			x.Quorum = 1
			return slices.Insert(es, 12, x)
		}, 13, "request req-A was already requested at seq 7"},
		{"a decision naming a policy never loaded", at(5, func(e *audit.Entry) {
			e.PolicySHA256 = strings.Repeat("0", 64)
		}), 5, "decided by policy 0000000000000000000000000000000000000000000000000000000000000000, which no earlier policy.loaded carries"},
		{"a decision naming no policy after one was loaded", at(7, func(e *audit.Entry) {
			e.PolicySHA256 = ""
		}), 7, "approval.requested names no policy, after a policy was loaded at seq 1"},
		{"the loaded policy altered", at(1, func(e *audit.Entry) {
			e.Policy = json.RawMessage(strings.Replace(string(e.Policy), "10000", "99999999", 1))
		}), 1, "is not the SHA-256 of the policy's JCS form"},
		{"a format 1 entry after format 2", at(15, func(e *audit.Entry) { e.V = 0 }), 15, "format 1 entry after format 2 began at seq 1"},
		{"an unknown format", at(15, func(e *audit.Entry) { e.V = audit.Format + 1 }), 15, fmt.Sprintf("entry format v %d is not one this verifier knows", audit.Format+1)},
		{"a format 2 entry after format 3", at(15, func(e *audit.Entry) { e.V = 2 }), 15, "format 2 entry after format 3: a log never goes back to an older format"},
		// Format 3 stores a call's args once; later entries name them.
		{"an outcome's args_sha256 other than its call.allowed's", at(6, func(e *audit.Entry) {
			e.ArgsSHA256 = strings.Repeat("ab", 32)
		}), 6, "call.executed's agent, tool or args_sha256 differ from its call.allowed at args_seq 5"},
		{"an outcome naming no call.allowed", at(6, func(e *audit.Entry) { e.ArgsSeq = 4 }), 6, "args_seq 4 is not a call.allowed whose outcome is still to come"},
		{"args_seq naming a later entry", at(6, func(e *audit.Entry) { e.ArgsSeq = 9 }), 6, "args_seq 9 is not an earlier entry"},
		{"a second outcome naming the same call.allowed", func(es []audit.Entry) []audit.Entry {
			return slices.Insert(es, 6, es[5])
		}, 7, "args_seq 5 is not a call.allowed whose outcome is still to come"},
		{"args_seq on a request's entry", at(12, func(e *audit.Entry) { e.ArgsSeq = 5 }), 12, "call.executed carries both args_seq and request_id"},
		{"args_seq on a call.allowed", at(5, func(e *audit.Entry) { e.ArgsSeq = 1 }), 5, "call.allowed carries args_seq; only a call's outcome does"},
		{"a request's entry with other args_sha256 than the request", at(18, func(e *audit.Entry) {
			e.ArgsSHA256 = strings.Repeat("ab", 32)
		}), 18, "approval.expired's args_sha256 abab"},
		{"an outcome whose args are nowhere", at(6, func(e *audit.Entry) { e.ArgsSeq, e.Args = 0, nil }), 6,
			"call.executed has args_sha256 but no args, args_redacted, args_seq or request_id: its args are nowhere"},
		{"args that do not match args_sha256", at(5, func(e *audit.Entry) { e.Args = json.RawMessage(`{"x":1}`) }), 5, "args do not match args_sha256"},
		// Format 3 bounds reasons and results.
		{"a reason over 1 KiB", at(16, func(e *audit.Entry) { e.Reason = strings.Repeat("x", 2000) }), 16,
			"reason of 2000 bytes, over 1024, without reason_sha256 and reason_size"},
		{"a cut reason whose whole is short", at(16, func(e *audit.Entry) { e.ReasonSHA256, e.ReasonSize = strings.Repeat("0", 64), 10 }), 16,
			"reason size 10: a text of at most 1024 bytes is kept whole"},
		{"a cut reason that keeps too little", at(16, func(e *audit.Entry) { e.ReasonSHA256, e.ReasonSize = strings.Repeat("0", 64), 5000 }), 16,
			"reason keeps 24 bytes of the whole; the log keeps the first 1024"},
		{"a result over 1 KiB", at(12, func(e *audit.Entry) { e.Result = json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`) }), 12,
			"result of 2002 bytes, over 1024, without result_sha256 and result_size"},
		{"a cut result that is not a string", at(12, func(e *audit.Entry) { e.ResultSHA256, e.ResultSize = strings.Repeat("0", 64), 5000 }), 12,
			"result_sha256 is set, but result is not the JSON string of its first bytes"},
		{"format 3 members in a format 2 entry", at(16, func(e *audit.Entry) { e.V, e.ReasonSize = 2, 3000 }), 16, "format 2 entry carries args_seq, reason_sha256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forged := forge(t, export, key, tc.edit)
			if tc.reason == "" {
				// An exact repeat of a key decision is what a crash
				// between append and outbox delete leaves: accepted.
				if _, err := Export(bytes.NewReader(forged), pub, Options{}); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantVerifyErr(t, forged, pub, nil, tc.seq, tc.reason)
		})
	}
}

// The requirement replay crosses export boundaries: an export --since N,
// verified with the previous export, checks its executions against
// approvals that only the previous export holds.
func TestRequirementsAcrossExports(t *testing.T) {
	dir := t.TempDir()
	key := seededKey(1)
	entries := exampleEntries(t, newExampleKeys(t))
	l := openLog(t, storetest.Open(t, dir), key, audit.Options{Now: stepClock()})
	for _, e := range entries[:11] { // up to req-A's approval
		appendExample(t, l, e)
	}
	older := exportBytes(t, l, 0)
	for _, e := range entries[11:] {
		appendExample(t, l, e)
	}
	newer := exportBytes(t, l, 11)
	s, err := Export(bytes.NewReader(newer), pubText(key), Options{Previous: bytes.NewReader(older)})
	if err != nil {
		t.Fatal(err)
	}
	if s.FirstSeq != 12 || s.Executions != 2 || s.Approvals != 2 {
		t.Fatalf("summary %+v", s)
	}
	// A forger who drops bob's assertion from the older export and
	// shortens the approval to match is refused there already.
	forgedOlder := forge(t, older, key, func(es []audit.Entry) []audit.Entry {
		es[10].Approvers, es[10].Assertions = []string{"alice"}, []int64{8}
		return without(es, 10)
	})
	wantVerifyErr(t, newer, pubText(key), forgedOlder, 10, "previous export: request req-A needs 2 distinct eligible approvers")
}

// Format 1 entries (the old golden export) verify, and the summary says
// that they record no requirements.
func TestFormat1IsReadButNotChecked(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "audit", "export.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Export(bytes.NewReader(data), pubText(seededKey(1)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Format1 != 10 || !bytes.Contains([]byte(s.String()), []byte("10 entries in format 1")) {
		t.Fatalf("summary %+v: %s", s, s)
	}
}
