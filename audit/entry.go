package audit

import "encoding/json"

// Entry kinds.
const (
	KindCallAllowed       = "call.allowed"       // policy said low: runs at once
	KindCallDenied        = "call.denied"        // policy said deny, or failed closed
	KindCallRejected      = "call.rejected"      // schema or argument validation failed
	KindCallExecuted      = "call.executed"      // backend ran and succeeded
	KindCallFailed        = "call.failed"        // backend ran and failed
	KindCallInterrupted   = "call.interrupted"   // the server stopped while the backend ran; outcome unknown, never rerun
	KindApprovalRequested = "approval.requested" // a request was raised
	KindApprovalAssertion = "approval.assertion" // one approver's verified key assertion (quorum may need more)
	KindApprovalApproved  = "approval.approved"  // quorum reached
	KindApprovalDenied    = "approval.denied"    // an approver denied with their key
	KindApprovalExpired   = "approval.expired"   // nobody decided in time
	KindApprovalCancelled = "approval.cancelled" // the agent went away or cancelled
	KindApprovalRejected  = "approval.rejected"  // an assertion was refused; Reason says which check
	KindApproverEnrolled  = "approver.enrolled"  // a credential was registered; PublicKey carries it
	KindCredentialRevoked = "credential.revoked" // a credential was revoked
	KindEnrollmentCreated = "enrollment.created" // a one-time enrollment link was issued
)

// Entry is one audit record. Everything but Hash and Sig is covered by the
// hash chain; byte fields are base64url without padding, hashes hex.
type Entry struct {
	Seq        int64           `json:"seq"`
	Time       string          `json:"time"` // RFC 3339, UTC, nanoseconds; set by Append
	Kind       string          `json:"kind"`
	Agent      string          `json:"agent,omitempty"`
	Tool       string          `json:"tool,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"` // omitted when redacted
	ArgsRedact bool            `json:"args_redacted,omitempty"`
	ArgsSHA256 string          `json:"args_sha256,omitempty"` // hex SHA-256 of JCS(args), always kept
	Decision   string          `json:"decision,omitempty"`    // low|high|critical|deny|approve|...
	Rule       string          `json:"rule,omitempty"`        // the rule(s) that decided
	Reason     string          `json:"reason,omitempty"`      // human text: why denied, failed, rejected
	RequestID  string          `json:"request_id,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"` // backend result summary (never secret values)

	// Approval and enrollment fields: what the auditor needs to recompute the
	// action digest and check the key's signature offline.
	Approver             string          `json:"approver,omitempty"`
	CredentialID         string          `json:"credential_id,omitempty"`
	PublicKey            string          `json:"public_key,omitempty"` // COSE_Key, on enrollment
	AuthorizationDetails json.RawMessage `json:"authorization_details,omitempty"`
	Display              string          `json:"display,omitempty"`
	Nonce                string          `json:"nonce,omitempty"`
	ExpiresAt            string          `json:"expires_at,omitempty"`
	Origin               string          `json:"origin,omitempty"`
	RPID                 string          `json:"rp_id,omitempty"`
	UserVerified         bool            `json:"user_verified,omitempty"`
	AuthenticatorData    string          `json:"authenticator_data,omitempty"`
	ClientDataJSON       string          `json:"client_data_json,omitempty"`
	Signature            string          `json:"signature,omitempty"`

	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash,omitempty"`
	Sig      string `json:"sig,omitempty"`
}
