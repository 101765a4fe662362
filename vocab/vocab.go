// Package vocab holds Countersign's shared words: the risk levels, the
// decisions a key signs, user-verification settings, approval request
// states and audit entry kinds. Each is a named string type whose values
// are exactly the strings the config, the database, the wire and the audit
// export carry, so converting to and from string never changes a byte.
//
// It imports nothing of the project's, so every package (config, authz,
// guard, approval, audit and the offline verifier) can share one spelling
// of each word instead of its own copy.
package vocab

import (
	"fmt"
	"slices"
)

// Level is a tool's or a rule's risk level, lowest first.
type Level string

// Risk levels. The audit log records only low, high and critical: a
// denied call carries no level.
const (
	LevelLow      Level = "low"
	LevelHigh     Level = "high"
	LevelCritical Level = "critical"
	LevelDeny     Level = "deny"
)

// Levels lists every level, lowest first.
func Levels() []Level { return []Level{LevelLow, LevelHigh, LevelCritical, LevelDeny} }

// ParseLevel returns the level s names, or an error naming the choices.
func ParseLevel(s string) (Level, error) { return parse("level", s, Levels()) }

// Decision is what an approver's key signs for a request.
type Decision string

// Decisions a key can sign.
const (
	Approve Decision = "approve"
	Deny    Decision = "deny"
)

// Decisions lists both decisions.
func Decisions() []Decision { return []Decision{Approve, Deny} }

// ParseDecision returns the decision s names, or an error naming the choices.
func ParseDecision(s string) (Decision, error) { return parse("decision", s, Decisions()) }

// UserVerification is the WebAuthn user-verification requirement of an
// approval (the tool's setting; critical is always required).
type UserVerification string

// User-verification requirements.
const (
	UVRequired    UserVerification = "required"    // every assertion must carry the UV flag
	UVPreferred   UserVerification = "preferred"   // asked for, not required
	UVDiscouraged UserVerification = "discouraged" // not asked for
)

// UserVerifications lists every requirement, strictest first.
func UserVerifications() []UserVerification {
	return []UserVerification{UVRequired, UVPreferred, UVDiscouraged}
}

// ParseUserVerification returns the requirement s names, or an error naming
// the choices.
func ParseUserVerification(s string) (UserVerification, error) {
	return parse("user verification", s, UserVerifications())
}

// State is an approval request's state.
type State string

// Request states.
const (
	StatePending   State = "pending"
	StateApproved  State = "approved"
	StateDenied    State = "denied"
	StateExpired   State = "expired"
	StateCancelled State = "cancelled"
	StateExecuted  State = "executed"
	StateFailed    State = "failed"
	// StateInterrupted: the process died while the request ran and the
	// backend cannot tell whether it took effect; it is never run again.
	StateInterrupted State = "interrupted"
)

// States lists every request state, pending first.
func States() []State {
	return []State{StatePending, StateApproved, StateDenied, StateExpired, StateCancelled,
		StateExecuted, StateFailed, StateInterrupted}
}

// ParseState returns the state s names, or an error naming the choices.
func ParseState(s string) (State, error) { return parse("request state", s, States()) }

// Kind is an audit entry's kind; docs/audit-export.md lists what each means.
type Kind string

// Audit entry kinds.
const (
	KindCallAllowed       Kind = "call.allowed"       // policy said low: runs at once
	KindCallDenied        Kind = "call.denied"        // policy said deny, or failed closed
	KindCallRejected      Kind = "call.rejected"      // schema or argument validation failed
	KindCallRateLimited   Kind = "call.rate_limited"  // calls refused over a limit; one entry per agent per minute at most, with the count
	KindCallExecuted      Kind = "call.executed"      // backend ran and succeeded
	KindCallFailed        Kind = "call.failed"        // backend ran and failed
	KindCallInterrupted   Kind = "call.interrupted"   // the call was handed over and no answer came (server stopped, timeout, connection lost); outcome unknown, never rerun
	KindCallReconciled    Kind = "call.reconciled"    // a person recorded whether an interrupted call ran; Reason says what and who
	KindApprovalRequested Kind = "approval.requested" // a request was raised
	KindApprovalAssertion Kind = "approval.assertion" // one approver's verified key assertion (quorum may need more)
	KindApprovalApproved  Kind = "approval.approved"  // quorum reached
	KindApprovalDenied    Kind = "approval.denied"    // an approver denied with their key
	KindApprovalExpired   Kind = "approval.expired"   // nobody decided in time
	KindApprovalCancelled Kind = "approval.cancelled" // the agent went away or cancelled
	KindApprovalRejected  Kind = "approval.rejected"  // an assertion was refused; Reason says which check
	KindApproverEnrolled  Kind = "approver.enrolled"  // a credential was registered; PublicKey carries it
	KindCredentialRevoked Kind = "credential.revoked" // a credential was revoked
	KindEnrollmentCreated Kind = "enrollment.created" // a one-time enrollment link was issued
	KindPolicyLoaded      Kind = "policy.loaded"      // the policy in force from here on; Policy carries it
	KindNotifySent        Kind = "notify.sent"        // people were told of a request's event; Reason names the channel types
	KindGrantRevoked      Kind = "grant.revoked"      // a standing grant was revoked on the page; Approver says by whom
	KindAgentFrozen       Kind = "agent.frozen"       // an agent's calls are refused from now on ("*": every agent); Approver says by whom
	KindAgentUnfrozen     Kind = "agent.unfrozen"     // a freeze was lifted; Approver says by whom
	// KindApproverSuspended: the identity provider no longer puts a person
	// in a group that grants a role; their approvals are refused (their
	// keys suspended for approving) until it does again.
	KindApproverSuspended Kind = "approver.suspended"
	// Upstream tools' pinned definitions (tools/upstream); Result says
	// which upstream, tool and definition hashes.
	KindToolPinned   Kind = "tool.pinned"   // an upstream tool's definition was pinned on the upstream's first connection
	KindToolChanged  Kind = "tool.changed"  // an upstream listed a tool unlike its pin (changed, new or removed); it is held
	KindToolAccepted Kind = "tool.accepted" // an admin pinned an upstream tool's current definition (upstreams accept)
	// KindRollbackAccepted: an operator started the server on a log that
	// does not extend the checkpoint its witness kept (serve
	// --accept-rollback); the entries after the restored copy are gone.
	KindRollbackAccepted Kind = "audit.rollback_accepted"
	// KindKeyRotated: the server key changed (audit rotate-key).
	// PreviousKey is the key that signs this entry, PublicKey the key
	// that signs every later entry and checkpoint, and Signature the
	// new key's signature over audit.RotationStatement.
	KindKeyRotated Kind = "key.rotated"
	// KindAuditPruned: the entries up to a point were written to a
	// verified archive and removed from the database (audit archive);
	// Result names the archive. Later exports extend the archive.
	KindAuditPruned Kind = "audit.pruned"
)

// Kinds lists every entry kind.
func Kinds() []Kind {
	return []Kind{KindCallAllowed, KindCallDenied, KindCallRejected, KindCallRateLimited,
		KindCallExecuted, KindCallFailed, KindCallInterrupted, KindCallReconciled,
		KindApprovalRequested, KindApprovalAssertion, KindApprovalApproved, KindApprovalDenied,
		KindApprovalExpired, KindApprovalCancelled, KindApprovalRejected, KindApproverEnrolled,
		KindCredentialRevoked, KindEnrollmentCreated, KindPolicyLoaded, KindNotifySent,
		KindGrantRevoked, KindAgentFrozen, KindAgentUnfrozen, KindToolPinned, KindToolChanged,
		KindToolAccepted, KindRollbackAccepted, KindApproverSuspended, KindKeyRotated, KindAuditPruned}
}

// ParseKind returns the kind s names, or an error naming none: the list is long.
func ParseKind(s string) (Kind, error) {
	if k := Kind(s); slices.Contains(Kinds(), k) {
		return k, nil
	}
	return "", fmt.Errorf("unknown audit entry kind %q", s)
}

// parse finds s among the choices; the error lists them so a config or
// flag typo is easy to fix.
func parse[T ~string](what, s string, choices []T) (T, error) {
	if v := T(s); slices.Contains(choices, v) {
		return v, nil
	}
	return "", fmt.Errorf("unknown %s %q (want one of %q)", what, s, choices)
}
