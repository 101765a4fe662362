package verify

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// A member is one optional member of an entry line, as a bit: the members
// an entry carries are a set, and the members its kind may carry another,
// so the check costs two words per entry. seq, time, v, kind, prev_hash,
// hash and sig are on every entry and are not in the sets.
type member uint64

const (
	mAgent member = 1 << iota
	mTool
	mArgs
	mArgsRedacted
	mArgsSHA256
	mArgsSeq
	mDecision
	mLevel
	mRule
	mUsage
	mPolicySHA256
	mPolicy
	mReason
	mReasonSHA256
	mReasonSize
	mRequestID
	mQuorum
	mEligible
	mUserVerification
	mApprovers
	mAssertions
	mBatchable
	mResult
	mResultSHA256
	mResultSize
	mApprover
	mCredentialID
	mPublicKey
	mPreviousKey
	mAttestationObject
	mAuthorizationDetails
	mDisplay
	mNonce
	mExpiresAt
	mDecidedAt
	mOrigin
	mRPID
	mUserVerified
	mAuthenticatorData
	mClientDataJSON
	mSignature
	mBatchDigests
	mBatchPosition
	mGrantID
	mGrantSeq
	mGrantCondition
	mGrantMaxCalls
	mGrantExpiresAt
	mInterruptedSeq
	mIdPIssuer
	mIdPSubject
	mIdPEmail
	mIdPAuthTime
	mIdPGroups
	memberCount = iota
)

// memberNames are the members' names on the line, in the order of the
// bits above.
var memberNames = [memberCount]string{
	"agent", "tool", "args", "args_redacted", "args_sha256", "args_seq", "decision", "level", "rule", "usage",
	"policy_sha256", "policy", "reason", "reason_sha256", "reason_size", "request_id", "quorum", "eligible",
	"user_verification", "approvers", "assertions", "batchable", "result", "result_sha256", "result_size",
	"approver", "credential_id", "public_key", "previous_key", "attestation_object", "authorization_details", "display", "nonce",
	"expires_at", "decided_at", "origin", "rp_id", "user_verified", "authenticator_data", "client_data_json",
	"signature", "batch_digests", "batch_position", "grant_id", "grant_seq", "grant_condition", "grant_max_calls",
	"grant_expires_at", "interrupted_seq", "idp_issuer", "idp_subject", "idp_email", "idp_auth_time", "idp_groups",
}

// membersOf is the set of optional members e carries (present on its line).
func membersOf(e *audit.Entry) member {
	var m member
	set := func(present bool, b member) {
		if present {
			m |= b
		}
	}
	set(e.Agent != "", mAgent)
	set(e.Tool != "", mTool)
	set(len(e.Args) > 0, mArgs)
	set(e.ArgsRedact, mArgsRedacted)
	set(e.ArgsSHA256 != "", mArgsSHA256)
	set(e.ArgsSeq != 0, mArgsSeq)
	set(e.Decision != "", mDecision)
	set(e.Level != "", mLevel)
	set(e.Rule != "", mRule)
	set(len(e.Usage) > 0, mUsage)
	set(e.PolicySHA256 != "", mPolicySHA256)
	set(len(e.Policy) > 0, mPolicy)
	set(e.Reason != "", mReason)
	set(e.ReasonSHA256 != "", mReasonSHA256)
	set(e.ReasonSize != 0, mReasonSize)
	set(e.RequestID != "", mRequestID)
	set(e.Quorum != 0, mQuorum)
	set(len(e.Eligible) > 0, mEligible)
	set(e.UserVerification != "", mUserVerification)
	set(len(e.Approvers) > 0, mApprovers)
	set(len(e.Assertions) > 0, mAssertions)
	set(e.Batchable, mBatchable)
	set(len(e.Result) > 0, mResult)
	set(e.ResultSHA256 != "", mResultSHA256)
	set(e.ResultSize != 0, mResultSize)
	set(e.Approver != "", mApprover)
	set(e.CredentialID != "", mCredentialID)
	set(e.PublicKey != "", mPublicKey)
	set(e.PreviousKey != "", mPreviousKey)
	set(e.AttestationObject != "", mAttestationObject)
	set(len(e.AuthorizationDetails) > 0, mAuthorizationDetails)
	set(e.Display != "", mDisplay)
	set(e.Nonce != "", mNonce)
	set(e.ExpiresAt != "", mExpiresAt)
	set(e.DecidedAt != "", mDecidedAt)
	set(e.Origin != "", mOrigin)
	set(e.RPID != "", mRPID)
	set(e.UserVerified, mUserVerified)
	set(e.AuthenticatorData != "", mAuthenticatorData)
	set(e.ClientDataJSON != "", mClientDataJSON)
	set(e.Signature != "", mSignature)
	set(len(e.BatchDigests) > 0, mBatchDigests)
	set(e.BatchPosition != 0, mBatchPosition)
	set(e.GrantID != "", mGrantID)
	set(e.GrantSeq != 0, mGrantSeq)
	set(e.GrantCondition != "", mGrantCondition)
	set(e.GrantMaxCalls != 0, mGrantMaxCalls)
	set(e.GrantExpiresAt != "", mGrantExpiresAt)
	set(e.InterruptedSeq != 0, mInterruptedSeq)
	set(e.IdPIssuer != "", mIdPIssuer)
	set(e.IdPSubject != "", mIdPSubject)
	set(e.IdPEmail != "", mIdPEmail)
	set(e.IdPAuthTime != "", mIdPAuthTime)
	set(len(e.IdPGroups) > 0, mIdPGroups)
	return m
}

// The member sets of docs/audit-export.md's kinds table. A new member, or
// a kind's new member (an IdP identity on approver.enrolled, say), is one
// bit above and one term here, and a row of that table.
const (
	// reason and result may be cut in format 3 (audit.Bound), which adds
	// their hash and size; formatRules checks those pairs.
	mReasonAll = mReason | mReasonSHA256 | mReasonSize
	mResultAll = mResult | mResultSHA256 | mResultSize
	// digest inputs: what the action digest needs, on every entry of a
	// request.
	mDigest = mTool | mArgs | mArgsRedacted | mArgsSHA256 | mRequestID | mAuthorizationDetails | mDisplay | mNonce | mExpiresAt
	// a decision of the policy about a call.
	mCallDecision = mAgent | mTool | mArgs | mArgsRedacted | mArgsSHA256 | mDecision | mRule | mUsage | mPolicySHA256 | mReasonAll
	// a call a standing grant let through, and its outcome.
	mGranted = mGrantID | mGrantSeq | mDecidedAt
	// a call's outcome.
	mOutcome = mCallDecision | mArgsSeq | mRequestID | mGranted | mResultAll
	// a key decision: the WebAuthn assertion and what it was checked
	// against.
	mKeyDecision = mAgent | mDigest | mDecision | mApprover | mCredentialID | mDecidedAt | mOrigin | mRPID | mUserVerified |
		mAuthenticatorData | mClientDataJSON | mSignature | mBatchDigests | mBatchPosition | mReasonAll
	mGrantTerms = mGrantID | mGrantCondition | mGrantMaxCalls | mGrantExpiresAt
	// what a visitor sent with a refused assertion: format 2 servers
	// recorded it on approval.rejected, unverified.
	mVisitor = mApprover | mCredentialID | mOrigin | mUserVerified | mAuthenticatorData | mClientDataJSON | mSignature
	mSwitch  = mAgent | mApprover | mDecidedAt | mReasonAll
	// a person the company's identity provider signed in, and their
	// groups as it listed them.
	mIdP = mIdPIssuer | mIdPSubject | mIdPEmail | mIdPAuthTime
)

// kindMembers is, per kind, the optional members an entry of format 2 or
// 3 may carry. Format 1 entries are read, not checked against it.
var kindMembers = map[vocab.Kind]member{
	vocab.KindPolicyLoaded:      mPolicySHA256 | mPolicy | mReasonAll,
	vocab.KindCallAllowed:       mCallDecision | mGranted,
	vocab.KindCallDenied:        mCallDecision,
	vocab.KindCallRejected:      mCallDecision &^ mPolicySHA256, // not a decision of the policy (rule 6)
	vocab.KindCallRateLimited:   mAgent | mTool | mReasonAll,
	vocab.KindCallExecuted:      mOutcome,
	vocab.KindCallFailed:        mOutcome,
	vocab.KindCallInterrupted:   mOutcome &^ mPolicySHA256, // written at start, or by the transport: not a decision
	vocab.KindCallReconciled:    mAgent | mDigest | mReasonAll | mInterruptedSeq,
	vocab.KindApprovalRequested: mAgent | mDigest | mLevel | mRule | mUsage | mPolicySHA256 | mQuorum | mEligible | mUserVerification | mBatchable | mReasonAll,
	vocab.KindApprovalAssertion: mKeyDecision | mGrantTerms | mIdP | mIdPGroups,
	vocab.KindApprovalDenied:    mKeyDecision | mIdP | mIdPGroups,
	vocab.KindApprovalApproved:  mAgent | mDigest | mDecision | mApprovers | mAssertions | mReasonAll,
	vocab.KindApprovalExpired:   mAgent | mDigest | mReasonAll,
	vocab.KindApprovalCancelled: mAgent | mDigest | mReasonAll,
	vocab.KindApprovalRejected:  mAgent | mDigest | mDecision | mRPID | mReasonAll,
	vocab.KindApproverEnrolled:  mApprover | mCredentialID | mPublicKey | mAttestationObject | mClientDataJSON | mOrigin | mRPID | mUserVerified | mReasonAll | mIdP,
	vocab.KindApproverSuspended: mApprover | mIdP | mIdPGroups | mReasonAll,
	vocab.KindCredentialRevoked: mApprover | mCredentialID | mPublicKey | mReasonAll,
	vocab.KindEnrollmentCreated: mApprover | mExpiresAt | mReasonAll | mIdP,
	vocab.KindGrantRevoked:      mAgent | mTool | mGrantID | mGrantSeq | mApprover | mDecidedAt | mReasonAll,
	vocab.KindAgentFrozen:       mSwitch,
	vocab.KindAgentUnfrozen:     mSwitch,
	vocab.KindToolPinned:        mTool | mResultAll | mReasonAll,
	vocab.KindToolChanged:       mTool | mResultAll | mReasonAll,
	vocab.KindToolAccepted:      mTool | mResultAll | mReasonAll,
	vocab.KindNotifySent:        mRequestID | mAgent | mTool | mReasonAll,
	vocab.KindRollbackAccepted:  mReasonAll,
	vocab.KindAuditPruned:       mResultAll | mReasonAll,                             // audit archive (pruned.go)
	vocab.KindKeyRotated:        mPublicKey | mPreviousKey | mSignature | mReasonAll, // audit rotate-key (audit/rotate.go)
}

// kindMembersV2 widens the table for format 2 entries: what servers of
// that format wrote and verify still reads.
var kindMembersV2 = map[vocab.Kind]member{
	vocab.KindApprovalRejected: mVisitor,
}

// foreignMembers names the members e carries that its kind may not, or
// says its kind is unknown; "" when it carries only its own.
func foreignMembers(e *audit.Entry) string {
	if e.V < 2 {
		return ""
	}
	allowed, ok := kindMembers[e.Kind]
	if !ok {
		return fmt.Sprintf("kind %q is not one of the kinds this verifier knows", e.Kind)
	}
	if e.V == 2 {
		allowed |= kindMembersV2[e.Kind]
	}
	extra := membersOf(e) &^ allowed
	if extra == 0 {
		return ""
	}
	var names []string
	for extra != 0 {
		i := bits.TrailingZeros64(uint64(extra))
		names = append(names, memberNames[i])
		extra &^= 1 << i
	}
	return fmt.Sprintf("%s carries %s, which the kinds table does not list for it", e.Kind, strings.Join(names, ", "))
}
