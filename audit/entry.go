package audit

import (
	"encoding/json"

	"github.com/countersign/countersign/vocab"
)

// Format is the version of the entry format that Append writes, recorded
// in every entry's V. Format 1 entries (written by older servers) have no
// V; docs/audit-export.md lists what each version added. Format 3 stores
// a call's arguments once (args_seq, request_id: see bound.go) and
// bounds reason and result (see Bound).
const Format = 3

// Entry is one audit record. Everything but Hash and Sig is covered by the
// hash chain; byte fields are base64url without padding, hashes hex. The
// field order is the order of the members on an exported line.
type Entry struct {
	Seq        int64           `json:"seq"`
	Time       string          `json:"time"`        // RFC 3339, UTC, nanoseconds; set by Append
	V          int             `json:"v,omitempty"` // entry format, set by Append; absent in format 1
	Kind       vocab.Kind      `json:"kind"`
	Agent      string          `json:"agent,omitempty"`
	Tool       string          `json:"tool,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"` // omitted when redacted
	ArgsRedact bool            `json:"args_redacted,omitempty"`
	ArgsSHA256 string          `json:"args_sha256,omitempty"` // hex SHA-256 of JCS(args), always kept
	ArgsSeq    int64           `json:"args_seq,omitempty"`    // format 3, on a call's outcome: seq of its call.allowed, which holds the args
	Decision   string          `json:"decision,omitempty"`    // call.*: the policy level; key entries: approve|deny
	Level      vocab.Level     `json:"level,omitempty"`       // approval.requested: high|critical
	Rule       string          `json:"rule,omitempty"`        // the rule(s) that decided
	// Usage is the usage variable the policy saw (what the agent had done
	// in rolling windows), on decisions of tools whose rules use it, so a
	// replay can settle those rules.
	Usage json.RawMessage `json:"usage,omitempty"`
	// PolicySHA256 names the policy that decided (call.* but rejected,
	// approval.requested), and on policy.loaded the policy it carries: hex
	// SHA-256 of the JCS form of Policy.
	PolicySHA256 string          `json:"policy_sha256,omitempty"`
	Policy       json.RawMessage `json:"policy,omitempty"`        // policy.loaded: the policy document
	Reason       string          `json:"reason,omitempty"`        // human text: why denied, failed, rejected
	ReasonSHA256 string          `json:"reason_sha256,omitempty"` // format 3: set only when reason was cut (Bound): hex SHA-256 of the whole
	ReasonSize   int64           `json:"reason_size,omitempty"`   // format 3: set only when reason was cut: the whole's size in bytes
	RequestID    string          `json:"request_id,omitempty"`

	// The requirement an approval request must meet (approval.requested),
	// and what met it (approval.approved): the verifier checks one against
	// the other offline.
	Quorum           int                    `json:"quorum,omitempty"`   // distinct eligible approvers needed
	Eligible         []string               `json:"eligible,omitempty"` // approver ids who may decide, resolved when requested
	UserVerification vocab.UserVerification `json:"user_verification,omitempty"`
	Approvers        []string               `json:"approvers,omitempty"`  // approval.approved: who approved, in order
	Assertions       []int64                `json:"assertions,omitempty"` // approval.approved: seq of each approver's approval.assertion

	// Batchable (approval.requested): the policy lets this request be
	// approved in a batch, one assertion over several requests (batch.go).
	Batchable bool `json:"batchable,omitempty"`

	Result json.RawMessage `json:"result,omitempty"` // backend result summary (never secret values); tool.* and audit.pruned: what they name
	// ResultSHA256 and ResultSize (format 3) are set only when the result
	// was cut (Bound): Result is then a JSON string holding the first
	// MaxText bytes of the whole result's JCS form, and these are that
	// form's hex SHA-256 and size in bytes.
	ResultSHA256 string `json:"result_sha256,omitempty"`
	ResultSize   int64  `json:"result_size,omitempty"`

	// Approval and enrollment fields: what the auditor needs to recompute the
	// action digest and check the key's signature offline.
	Approver     string `json:"approver,omitempty"`
	CredentialID string `json:"credential_id,omitempty"`
	PublicKey    string `json:"public_key,omitempty"`   // COSE_Key, on enrollment; key.rotated: the new server key
	PreviousKey  string `json:"previous_key,omitempty"` // key.rotated: the server key that signs it
	// AttestationObject is the key's attestation at enrollment
	// (approver.enrolled, base64url), with the enrollment's clientDataJSON
	// in ClientDataJSON: what `audit verify --attestation-roots` checks.
	AttestationObject    string          `json:"attestation_object,omitempty"`
	AuthorizationDetails json.RawMessage `json:"authorization_details,omitempty"`
	Display              string          `json:"display,omitempty"`
	Nonce                string          `json:"nonce,omitempty"`
	ExpiresAt            string          `json:"expires_at,omitempty"`
	DecidedAt            string          `json:"decided_at,omitempty"` // key decisions: when the server verified and counted it (TimeFormat)
	Origin               string          `json:"origin,omitempty"`
	RPID                 string          `json:"rp_id,omitempty"`
	UserVerified         bool            `json:"user_verified,omitempty"`
	AuthenticatorData    string          `json:"authenticator_data,omitempty"`
	ClientDataJSON       string          `json:"client_data_json,omitempty"`
	Signature            string          `json:"signature,omitempty"`

	// BatchDigests and BatchPosition (approval.assertion) say that the
	// assertion above signed a batch: the action digests of every request
	// in it, hex, in the order signed, and the index of this entry's
	// request among them (absent when 0). See batch.go.
	BatchDigests  []string `json:"batch_digests,omitempty"`
	BatchPosition int      `json:"batch_position,omitempty"`
	// Standing grants (grant.go). On the approval.assertion whose tap
	// approved a request and created a grant: its id, condition, limits;
	// the assertion signs the grant digest (digest.ComputeGrant). On a
	// call a grant let through (call.allowed and its outcome) and on
	// grant.revoked: grant_id, and grant_seq, the seq of that assertion.
	GrantID        string `json:"grant_id,omitempty"`
	GrantSeq       int64  `json:"grant_seq,omitempty"`
	GrantCondition string `json:"grant_condition,omitempty"`
	GrantMaxCalls  int    `json:"grant_max_calls,omitempty"`
	GrantExpiresAt string `json:"grant_expires_at,omitempty"`

	// InterruptedSeq is set on the call.reconciled of a call that had no
	// approval request (a routine call, or one a grant let through): the
	// seq of its call.interrupted, which the finding settles. A
	// request's call.reconciled names its request_id instead.
	InterruptedSeq int64 `json:"interrupted_seq,omitempty"`

	// The person the company's identity provider signed in (identity:
	// in mcp.yaml), for an approver who came from it: on
	// enrollment.created and approver.enrolled of a self-service link,
	// and on key decisions (approval.assertion, approval.denied). Issuer
	// and subject name them (the approver id is derived from the two);
	// email is as the provider said; auth_time is when they
	// authenticated there (RFC 3339); groups (decisions) are the groups
	// the provider listed at that moment, which made them eligible
	// under the policy's identity roles.
	IdPIssuer   string   `json:"idp_issuer,omitempty"`
	IdPSubject  string   `json:"idp_subject,omitempty"`
	IdPEmail    string   `json:"idp_email,omitempty"`
	IdPAuthTime string   `json:"idp_auth_time,omitempty"`
	IdPGroups   []string `json:"idp_groups,omitempty"`

	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash,omitempty"`
	Sig      string `json:"sig,omitempty"`
}
