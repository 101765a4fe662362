package ceremony

import (
	"errors"
	"fmt"
)

// CheckError names the check that refused an assertion or a ceremony. The
// approval.rejected audit entry's reason is its Error text, which starts
// with the check name. Test with errors.Is against the Err* values below.
type CheckError struct {
	Check  string
	Detail string // may quote what the visitor sent
	// Words say what the check found in fixed words: the reason an
	// approval.rejected entry gives, never formatted from the request.
	Words string
}

func (e *CheckError) Error() string {
	if e.Detail == "" {
		return e.Check
	}
	return e.Check + ": " + e.Detail
}

// Is matches any CheckError with the same Check.
func (e *CheckError) Is(target error) bool {
	t, ok := target.(*CheckError)
	return ok && t.Check == e.Check
}

// Failf is base with a detail.
func Failf(base *CheckError, format string, args ...any) *CheckError {
	return &CheckError{Check: base.Check, Words: base.Words, Detail: fmt.Sprintf(format, args...)}
}

// The checks of keys and ceremonies. Package approval adds those about
// the request (not_pending, expired, already_counted, ...) and says the
// order they all run in.
var (
	ErrCeremony             = &CheckError{Check: "ceremony", Words: "no unused, unexpired ceremony of this request matched"}             // unknown, used, expired or foreign ceremony
	ErrMalformed            = &CheckError{Check: "malformed", Words: "the response is not a well-formed WebAuthn assertion"}             // the response does not parse
	ErrUnknownCredential    = &CheckError{Check: "unknown_credential", Words: "the credential is not enrolled"}                          // key not enrolled
	ErrRevokedCredential    = &CheckError{Check: "revoked_credential", Words: "the credential was revoked"}                              // key revoked
	ErrApproverNotAllowed   = &CheckError{Check: "approver_not_allowed", Words: "the credential's approver may not decide this request"} // key's approver not allowed for this request
	ErrCredentialNotOffered = &CheckError{Check: "credential_not_offered", Words: "the credential was not offered for this ceremony"}    // key not in the ceremony's allowCredentials
	ErrCeremonyType         = &CheckError{Check: "type", Words: "clientData.type is not webauthn.get"}                                   // clientData.type is not webauthn.get
	ErrChallenge            = &CheckError{Check: "challenge", Words: "the key signed a different action than this request and decision"} // signed digest is not this (request, decision)
	ErrReplay               = &CheckError{Check: "replay", Words: "this assertion was already used"}                                     // this exact assertion was used before
	ErrOrigin               = &CheckError{Check: "origin", Words: "the assertion names an origin that is not configured"}                // origin not configured
	ErrRPID                 = &CheckError{Check: "rp_id", Words: "the authenticator data is not for this RP ID"}                         // rpIdHash is not our RP ID
	ErrUserPresence         = &CheckError{Check: "user_presence", Words: "the key did not report user presence"}                         // UP flag not set
	ErrUserVerification     = &CheckError{Check: "user_verification", Words: "user verification was required and not reported"}          // UV required and not set
	ErrSignature            = &CheckError{Check: "signature", Words: "the signature did not verify"}                                     // go-webauthn refused it (signature and the rest)
	ErrCounter              = &CheckError{Check: "counter", Words: "the sign counter did not increase: possible cloned key"}             // sign counter did not increase
	// A person of the identity provider (identity:) approving.
	ErrNotEligible         = &CheckError{Check: "not_eligible", Words: "the identity provider no longer puts the approver in a group that grants an approver role"}
	ErrProviderUnreachable = &CheckError{Check: "identity_provider_unreachable", Words: "the identity provider could not be asked whether the approver may still approve; approvals fail closed"}
)

// Reason is the audit reason for a refusal: the check's name and its fixed
// words, never its detail, which may quote what the visitor sent. claimed,
// when not empty, is the server's own description of the enrolled
// credential the response named (RP.Claimed).
func Reason(err error, claimed string) string {
	var ce *CheckError
	if !errors.As(err, &ce) {
		return "refused"
	}
	words := ce.Words
	if words == "" {
		words = "refused"
	}
	out := ce.Check + ": " + words
	if claimed != "" {
		out += "; " + claimed
	}
	return out
}
