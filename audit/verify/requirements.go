package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// requirements replays the approval requests of a log in order and checks
// that every countersigned action that ran had the approvals its request
// required. It sees format 2 entries only (format 1 recorded no
// requirement); entries it cannot place are refused, never skipped.
//
// The rules, each failing with the entry's seq and a reason:
//
//   - approval.requested states level, quorum, eligible approvers, the UV
//     requirement and the expiry; a request id is requested once.
//   - approval.assertion and approval.denied follow their request while it
//     is pending, from an eligible approver, over the request's own digest
//     inputs, decided before it expired, with the UV flag when required.
//     (That the assertion verifies with a key enrolled earlier and not
//     revoked is checked by [credentials].)
//   - approval.approved lists, as assertions, earlier approval.assertion
//     entries of the same request from quorum distinct eligible approvers,
//     and as approvers those approvers in the same order.
//   - call.executed, call.failed and call.interrupted carry the policy level as decision: at
//     high or critical they name an approved request of the same agent,
//     tool, arguments and level, and run at most once per request. At low they
//     follow a call.allowed of the same agent, tool and arguments, or,
//     for a routine call recorded once after it ran (a tool that changes
//     nothing), they stand alone; either way they may not run the
//     arguments of an approved request that has not run (an execution of
//     it relabelled low).
//   - call.reconciled follows a call.interrupted of its request, once: a
//     person's finding about a call whose outcome was unknown. A call that
//     had no request (routine, or let through by a grant) is named by
//     interrupted_seq instead: the seq of its call.interrupted, whose
//     agent, tool and args_sha256 the finding repeats; it too is settled
//     once. No other entry carries interrupted_seq.
type requirements struct {
	requests map[string]*request
	// allowed counts call.allowed entries not yet followed by their
	// execution, by agent, tool and arguments. A log of routine calls
	// that were allowed but never executed would fill it; its keys and
	// values hold no pointers, so the garbage collector need not scan it.
	allowed map[callKey]int32
	// unrun holds approved requests not yet run, by tool and arguments
	// (whoever's name a forger puts on the execution).
	unrun map[callKey]int32

	approvals  int // approval.approved entries checked
	executions int // countersigned executions checked

	grants grantBook // standing grants and the calls they let through (grant.go)

	// open holds the format 3 call.allowed entries whose outcome has not
	// come, by seq: the outcome names one in args_seq (bound.go).
	open map[int64]*audit.Entry

	// interrupted holds the calls without a request whose outcome was
	// recorded unknown, by the seq of their call.interrupted: what a
	// call.reconciled may name in interrupted_seq. They are rare.
	interrupted map[int64]*interruptedCall
}

// interruptedCall is a call.interrupted without a request, and the seq of
// the call.reconciled that settled it (0 while none has).
type interruptedCall struct {
	call       callKey
	reconciled int64
}

// callKey identifies calls of one agent, tool and arguments: a SHA-256
// of the three, length-prefixed.
type callKey [32]byte

func keyOf(e *audit.Entry) callKey {
	h := sha256.New()
	for _, s := range []string{e.Agent, e.Tool, e.ArgsSHA256} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var k callKey
	h.Sum(k[:0])
	return k
}

// actionOf identifies what a call does, whoever made it: its tool and
// arguments.
func actionOf(e *audit.Entry) callKey {
	return keyOf(&audit.Entry{Tool: e.Tool, ArgsSHA256: e.ArgsSHA256})
}

// request is what the log said about one approval request so far.
type request struct {
	seq      int64        // of approval.requested
	entry    *audit.Entry // approval.requested; nil once the request can no longer run
	legacy   bool         // requested in format 1: no requirement recorded
	expires  time.Time
	ended    *audit.Entry // the terminal entry: approval.approved, .denied, .expired or .cancelled
	endedSeq int64
	executed int64  // seq of its call.executed or call.failed
	args     string // its args_sha256, which every later entry of it repeats (format 3)
	// interrupted: its run was call.interrupted; reconciled: the seq of
	// the call.reconciled that settled it.
	interrupted bool
	reconciled  int64

	assertions map[int64]*audit.Entry // its approval.assertion entries by seq, while pending
}

func newRequirements() *requirements {
	return &requirements{requests: map[string]*request{}, allowed: map[callKey]int32{}, unrun: map[callKey]int32{}, grants: newGrantBook(),
		open: map[int64]*audit.Entry{}, interrupted: map[int64]*interruptedCall{}}
}

// legacyRequest notes a format 1 approval.requested, so that a format 2
// execution of it is recognised (its requirement cannot be checked).
func (q *requirements) legacyRequest(e *audit.Entry) {
	if e.Kind == vocab.KindApprovalRequested && e.RequestID != "" && q.requests[e.RequestID] == nil {
		q.requests[e.RequestID] = &request{seq: e.Seq, legacy: true, args: e.ArgsSHA256}
	}
}

// check applies a format 2 entry and returns why it breaks a rule, or "".
func (q *requirements) check(e *audit.Entry) string {
	if reason := grantFields(e); reason != "" {
		return reason
	}
	if e.InterruptedSeq != 0 && e.Kind != vocab.KindCallReconciled {
		return string(e.Kind) + " carries interrupted_seq; only call.reconciled does"
	}
	switch e.Kind {
	case vocab.KindApprovalRequested:
		return q.requested(e)
	case vocab.KindApprovalAssertion, vocab.KindApprovalDenied:
		return q.decision(e)
	case vocab.KindApprovalApproved:
		return q.approved(e)
	case vocab.KindApprovalExpired, vocab.KindApprovalCancelled:
		r, reason := q.pending(e)
		if reason != "" {
			return reason
		}
		if r != nil {
			q.end(r, e)
		}
	case vocab.KindCallAllowed:
		if e.GrantID != "" || e.GrantSeq != 0 {
			return q.grants.allowed(q, e)
		}
		if vocab.Level(e.Decision) == vocab.LevelLow {
			q.allowed[keyOf(e)]++
		}
	case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
		var reason string
		if e.GrantID != "" || e.GrantSeq != 0 {
			reason = q.grants.execution(e)
		} else {
			// An interrupted run may have acted: it counts as the one run.
			reason = q.execution(e)
		}
		if reason == "" && e.Kind == vocab.KindCallInterrupted && e.RequestID == "" {
			q.interrupted[e.Seq] = &interruptedCall{call: keyOf(e)}
		}
		return reason
	case vocab.KindCallReconciled:
		return q.reconciled(e)
	case vocab.KindGrantRevoked:
		return q.grants.revoked(e)
	case vocab.KindAgentFrozen, vocab.KindAgentUnfrozen:
		return agentSwitch(e)
	}
	return ""
}

// reconciled checks a person's finding about an interrupted call.
func (q *requirements) reconciled(e *audit.Entry) string {
	if e.InterruptedSeq != 0 || e.RequestID == "" {
		return q.reconciledCall(e)
	}
	r := q.requests[e.RequestID]
	switch {
	case e.RequestID == "" || r == nil:
		return fmt.Sprintf("call.reconciled names request %q, which no earlier approval.requested raised", e.RequestID)
	case !r.interrupted:
		return fmt.Sprintf("call.reconciled of request %s, whose call was not interrupted", e.RequestID)
	case r.reconciled != 0:
		return fmt.Sprintf("request %s was already reconciled at seq %d", e.RequestID, r.reconciled)
	}
	r.reconciled = e.Seq
	return ""
}

// reconciledCall checks a finding about an interrupted call that had no
// request: it names the call by the seq of its call.interrupted.
func (q *requirements) reconciledCall(e *audit.Entry) string {
	c := q.interrupted[e.InterruptedSeq]
	switch {
	case e.RequestID != "":
		return "call.reconciled names both request_id and interrupted_seq; a finding settles one call"
	case e.InterruptedSeq <= 0 || e.InterruptedSeq >= e.Seq:
		return fmt.Sprintf("call.reconciled names neither a request nor an earlier call (interrupted_seq %d)", e.InterruptedSeq)
	case c == nil:
		return fmt.Sprintf("call.reconciled of seq %d, which is not the call.interrupted of a call without a request", e.InterruptedSeq)
	case c.call != keyOf(e):
		return fmt.Sprintf("call.reconciled's agent, tool or args_sha256 differ from the call.interrupted at seq %d", e.InterruptedSeq)
	case c.reconciled != 0:
		return fmt.Sprintf("the call interrupted at seq %d was already reconciled at seq %d", e.InterruptedSeq, c.reconciled)
	}
	c.reconciled = e.Seq
	return ""
}

func (q *requirements) requested(e *audit.Entry) string {
	if e.RequestID == "" {
		return "approval.requested without request_id"
	}
	if r := q.requests[e.RequestID]; r != nil {
		if r.entry != nil && sameRequest(r.entry, e) {
			return "" // the same entry appended again after a crash
		}
		return fmt.Sprintf("request %s was already requested at seq %d", e.RequestID, r.seq)
	}
	switch {
	case e.Level != vocab.LevelHigh && e.Level != vocab.LevelCritical:
		return fmt.Sprintf("approval.requested has level %q, want high or critical", e.Level)
	case len(e.Eligible) == 0:
		return "approval.requested names no eligible approvers"
	case e.Quorum < 1 || e.Quorum > len(e.Eligible):
		return fmt.Sprintf("approval.requested has quorum %d of %d eligible approvers", e.Quorum, len(e.Eligible))
	case e.UserVerification != vocab.UVRequired && e.UserVerification != vocab.UVPreferred && e.UserVerification != vocab.UVDiscouraged:
		return fmt.Sprintf("approval.requested has user_verification %q", e.UserVerification)
	case e.Level == vocab.LevelCritical && e.UserVerification != vocab.UVRequired:
		return "a critical request must require user verification"
	case e.Level == vocab.LevelCritical && e.Batchable:
		return "a critical request cannot be batchable"
	case e.Tool == "" || e.Nonce == "" || len(e.AuthorizationDetails) == 0:
		return "approval.requested lacks tool, nonce or authorization_details"
	}
	seen := map[string]bool{}
	for _, a := range e.Eligible {
		if a == "" || seen[a] {
			return fmt.Sprintf("approval.requested lists eligible approver %q twice or empty", a)
		}
		seen[a] = true
	}
	expires, err := time.Parse(time.RFC3339, e.ExpiresAt)
	if err != nil || digest.FormatTime(expires) != e.ExpiresAt {
		return fmt.Sprintf("approval.requested has expires_at %q, want RFC 3339 UTC in whole seconds", e.ExpiresAt)
	}
	if _, err := audit.DecodeArgsSHA256(e.ArgsSHA256); err != nil {
		return "approval.requested: " + err.Error()
	}
	if _, err := decodeB64URL(e.Nonce); err != nil {
		return "approval.requested: nonce is not base64url with zero pad bits"
	}
	q.requests[e.RequestID] = &request{seq: e.Seq, entry: e, expires: expires, args: e.ArgsSHA256}
	return ""
}

// pending finds the request e belongs to and requires that it has not
// ended. A legacy request is returned as nil with no complaint.
func (q *requirements) pending(e *audit.Entry) (*request, string) {
	r := q.requests[e.RequestID]
	switch {
	case r == nil:
		return nil, fmt.Sprintf("%s for request %q, which no earlier approval.requested raised", e.Kind, e.RequestID)
	case r.legacy:
		return nil, ""
	case r.ended != nil && r.ended.Kind == e.Kind && sameTerminal(r.ended, e):
		return nil, "" // the same entry appended again after a crash
	case r.ended != nil:
		return nil, fmt.Sprintf("%s for request %s, which already ended at seq %d (%s)", e.Kind, e.RequestID, r.endedSeq, r.ended.Kind)
	}
	return r, ""
}

func (q *requirements) end(r *request, e *audit.Entry) {
	r.ended, r.endedSeq = e, e.Seq
	r.assertions = nil
	if e.Kind != vocab.KindApprovalApproved {
		r.entry = nil // nothing can run on it any more
		return
	}
	q.unrun[actionOf(r.entry)]++
}

// decision checks an approver's key decision against the request.
func (q *requirements) decision(e *audit.Entry) string {
	r, reason := q.pending(e)
	if r == nil {
		return reason
	}
	req := r.entry
	if !slices.Contains(req.Eligible, e.Approver) {
		return fmt.Sprintf("approver %q is not eligible for request %s (eligible: %s)", e.Approver, e.RequestID, strings.Join(req.Eligible, ", "))
	}
	if field := differentInput(req, e); field != "" {
		return fmt.Sprintf("the assertion's %s differs from request %s at seq %d", field, e.RequestID, r.seq)
	}
	decided, err := time.Parse(audit.TimeFormat, e.DecidedAt)
	if err != nil {
		return fmt.Sprintf("decided_at %q is not a time in the log's format", e.DecidedAt)
	}
	if !decided.Before(r.expires) {
		return fmt.Sprintf("decided at %s, after request %s expired at %s", e.DecidedAt, e.RequestID, req.ExpiresAt)
	}
	if req.UserVerification == vocab.UVRequired && !e.UserVerified {
		return fmt.Sprintf("request %s requires user verification; %s's assertion has none", e.RequestID, e.Approver)
	}
	if reason := batchRule(req, e); reason != "" {
		return reason
	}
	if e.GrantID != "" || e.GrantCondition != "" {
		if reason := q.grants.proposed(req, e, decided); reason != "" {
			return reason
		}
	}
	if e.Kind == vocab.KindApprovalDenied {
		q.end(r, e)
		return ""
	}
	if r.assertions == nil {
		r.assertions = map[int64]*audit.Entry{}
	}
	r.assertions[e.Seq] = e
	return ""
}

// approved checks that the assertions an approval names meet the quorum.
func (q *requirements) approved(e *audit.Entry) string {
	r, reason := q.pending(e)
	if r == nil {
		return reason
	}
	req := r.entry
	if vocab.Decision(e.Decision) != vocab.Approve {
		return fmt.Sprintf("approval.approved with decision %q", e.Decision)
	}
	if e.Tool != req.Tool || e.ArgsSHA256 != req.ArgsSHA256 {
		return fmt.Sprintf("approval.approved is for other tool or arguments than request %s at seq %d", e.RequestID, r.seq)
	}
	var who []string
	for _, seq := range e.Assertions {
		a := r.assertions[seq]
		switch {
		case a == nil:
			return fmt.Sprintf("assertion seq %d is not an earlier approval.assertion of request %s", seq, e.RequestID)
		case slices.Contains(who, a.Approver):
			return fmt.Sprintf("assertion seq %d is a second one by %s; approvers must be distinct", seq, a.Approver)
		}
		who = append(who, a.Approver)
	}
	if len(who) < req.Quorum {
		return fmt.Sprintf("request %s needs %d distinct eligible approvers, approval.approved shows %d (%s)", e.RequestID, req.Quorum, len(who), strings.Join(who, ", "))
	}
	if !slices.Equal(who, e.Approvers) {
		return fmt.Sprintf("approvers [%s] are not the approvers of the assertions it lists [%s]", strings.Join(e.Approvers, ", "), strings.Join(who, ", "))
	}
	q.end(r, e)
	q.approvals++
	q.grants.activate(e.Assertions)
	return ""
}

// execution checks that a backend ran only with what its level required.
func (q *requirements) execution(e *audit.Entry) string {
	switch vocab.Level(e.Decision) {
	case vocab.LevelLow:
		if e.RequestID != "" {
			return fmt.Sprintf("%s at level low names request %s", e.Kind, e.RequestID)
		}
		k := keyOf(e)
		if q.unrun[actionOf(e)] > 0 && q.allowed[k] == 0 {
			return fmt.Sprintf("%s of %s at level low runs the arguments of an approved request that has not run: an execution of it relabelled low", e.Kind, e.Tool)
		}
		if q.allowed[k] == 0 {
			return "" // a routine call recorded once, after it ran
		}
		if q.allowed[k]--; q.allowed[k] == 0 {
			delete(q.allowed, k)
		}
		return ""
	case vocab.LevelHigh, vocab.LevelCritical:
	default:
		return fmt.Sprintf("%s of %s with decision %q, want the level it ran at (low, high or critical)", e.Kind, e.Tool, e.Decision)
	}
	if e.RequestID == "" {
		return fmt.Sprintf("%s of %s at level %s without request_id: it ran without an approval", e.Kind, e.Tool, e.Decision)
	}
	r := q.requests[e.RequestID]
	switch {
	case r == nil:
		return fmt.Sprintf("%s of %s names request %s, which no earlier approval.requested raised", e.Kind, e.Tool, e.RequestID)
	case r.executed != 0:
		return fmt.Sprintf("request %s already ran at seq %d; an approval runs once", e.RequestID, r.executed)
	case r.legacy:
		r.executed = e.Seq
		return ""
	case r.ended == nil || r.ended.Kind != vocab.KindApprovalApproved:
		state := "still pending"
		if r.ended != nil {
			state = fmt.Sprintf("ended at seq %d by %s", r.endedSeq, r.ended.Kind)
		}
		return fmt.Sprintf("%s of request %s, which was not approved (%s)", e.Kind, e.RequestID, state)
	case e.Tool != r.entry.Tool || e.ArgsSHA256 != r.entry.ArgsSHA256:
		return fmt.Sprintf("%s is for other tool or arguments than the approved request %s (seq %d)", e.Kind, e.RequestID, r.seq)
	case e.Agent != r.entry.Agent:
		// The approval was for one agent's call: another agent's
		// execution of it would borrow approvals it never had.
		return fmt.Sprintf("%s by agent %q, but request %s (seq %d) was raised by agent %q", e.Kind, e.Agent, e.RequestID, r.seq, r.entry.Agent)
	case vocab.Level(e.Decision) != r.entry.Level:
		return fmt.Sprintf("%s at level %s, but request %s was raised at level %s", e.Kind, e.Decision, e.RequestID, r.entry.Level)
	}
	if a := actionOf(r.entry); q.unrun[a] > 1 {
		q.unrun[a]--
	} else {
		delete(q.unrun, a)
	}
	r.executed = e.Seq
	r.interrupted = e.Kind == vocab.KindCallInterrupted
	r.entry = nil
	q.executions++
	return ""
}

// differentInput names the first digest input in which a key decision
// differs from its request, or "".
func differentInput(req, e *audit.Entry) string {
	switch {
	case e.Tool != req.Tool:
		return "tool"
	case e.ArgsSHA256 != req.ArgsSHA256:
		return "args_sha256"
	case !bytes.Equal(e.AuthorizationDetails, req.AuthorizationDetails):
		return "authorization_details"
	case e.Display != req.Display:
		return "display"
	case e.Nonce != req.Nonce:
		return "nonce"
	case e.ExpiresAt != req.ExpiresAt:
		return "expires_at"
	}
	return ""
}

// sameRequest reports whether two approval.requested entries state the
// same request (a re-append after a crash differs only in writer fields).
func sameRequest(a, b *audit.Entry) bool {
	return a.Level == b.Level && a.Quorum == b.Quorum && slices.Equal(a.Eligible, b.Eligible) && a.Batchable == b.Batchable &&
		a.UserVerification == b.UserVerification && a.Agent == b.Agent && differentInput(a, b) == ""
}

func sameTerminal(a, b *audit.Entry) bool {
	return a.Kind == b.Kind && a.Approver == b.Approver && a.Signature == b.Signature &&
		slices.Equal(a.Approvers, b.Approvers) && slices.Equal(a.Assertions, b.Assertions)
}

// agentSwitch checks an agent.frozen or agent.unfrozen entry: it names the
// agent ("*" for every agent) and who acted, and nothing about a call.
// Calls of a frozen agent may still be logged after it, in order of their
// append rather than of the freeze's commit (another process may have
// written it), so the verifier does not hold later entries to it.
func agentSwitch(e *audit.Entry) string {
	switch {
	case e.Agent == "" || e.Approver == "":
		return string(e.Kind) + " does not say which agent, or who acted"
	case e.Tool != "" || e.RequestID != "" || len(e.Args) > 0 || e.ArgsSHA256 != "" || e.Decision != "":
		return string(e.Kind) + " carries call fields"
	}
	return ""
}

// argsAt checks, once the entry passed the rules of its kind, that a
// format 3 entry that does not hold its call's args names an earlier
// entry that does, of the same call: its call.allowed (args_seq) or its
// approval.requested (request_id). It notes the call.allowed entries an
// outcome may name.
func (q *requirements) argsAt(e *audit.Entry) string {
	if e.V < 3 {
		return ""
	}
	switch {
	case e.Kind == vocab.KindCallAllowed:
		q.open[e.Seq] = e
	case e.ArgsSeq != 0:
		a := q.open[e.ArgsSeq]
		switch {
		case a == nil:
			return fmt.Sprintf("args_seq %d is not a call.allowed whose outcome is still to come", e.ArgsSeq)
		case a.Agent != e.Agent || a.Tool != e.Tool || a.ArgsSHA256 != e.ArgsSHA256:
			return fmt.Sprintf("%s's agent, tool or args_sha256 differ from its call.allowed at args_seq %d", e.Kind, e.ArgsSeq)
		case a.ArgsRedact != e.ArgsRedact:
			return fmt.Sprintf("%s and its call.allowed at args_seq %d differ in args_redacted", e.Kind, e.ArgsSeq)
		}
		delete(q.open, e.ArgsSeq)
	case e.InterruptedSeq != 0:
		// A finding about a call without a request: reconciledCall
		// checked it repeats that call's args_sha256.
	case len(e.Args) > 0 || e.ArgsSHA256 == "" || e.Kind == vocab.KindApprovalRequested:
	case e.RequestID == "" && e.ArgsRedact:
	case e.RequestID == "":
		return fmt.Sprintf("%s has args_sha256 but no args, args_redacted, args_seq or request_id: its args are nowhere", e.Kind)
	default:
		r := q.requests[e.RequestID]
		switch {
		case r == nil:
			return fmt.Sprintf("%s names request %q, which no earlier approval.requested raised: its args are nowhere", e.Kind, e.RequestID)
		case r.args != e.ArgsSHA256:
			return fmt.Sprintf("%s's args_sha256 %s differs from that of request %s (seq %d), which holds the args", e.Kind, e.ArgsSHA256, e.RequestID, r.seq)
		}
	}
	return ""
}

// argsOf finds the args of a format 3 entry that names the entry holding
// them, if the verifier still has it; nil otherwise.
func (q *requirements) argsOf(e *audit.Entry) []byte {
	if a := q.open[e.ArgsSeq]; e.ArgsSeq != 0 && a != nil {
		return a.Args
	}
	if r := q.requests[e.RequestID]; e.RequestID != "" && r != nil && r.entry != nil {
		return r.entry.Args
	}
	return nil
}
