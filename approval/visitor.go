package approval

import (
	"context"
	"errors"
	"fmt"

	"github.com/countersign/countersign/approval/ceremony"
)

// What a visitor of the approver page sends is untrusted: anyone on the
// listener's network can POST with a cookie and header pair of their own
// choosing, so CSRF protection stops other sites, not other local
// processes. This file keeps what they send out of the signed log
// (invariant 12) and bounds how much work and how many rows they cause:
//
//   - ids and tokens in paths and bodies must have the shape the server
//     issues (a UUID, a 32-byte base64url token) before anything looks them up;
//   - approval.rejected reasons are fixed words ([rejectedReason]) plus ids the
//     server issued, never text from the request;
//   - begin and finish are rate limited per client address and per request
//     (by the page, approval/page);
//   - ceremonies nobody finished are deleted once they expire (ceremony.RP.Sweep).

// validID reports whether s is a request or ceremony id as the server
// issues them: a UUID in its canonical 36-character form.
func validID(s string) bool { return ceremony.ValidID(s) }

// validToken reports whether s is an enrollment token as CreateEnrollment
// issues them: 32 random bytes, base64url without padding.
func validToken(s string) bool { return ceremony.ValidToken(s) }

// reasons are the words an approval.rejected entry gives for each check.
// They are written here, not formatted from the error, because a CheckError's
// detail may quote what the visitor sent.
var reasons = map[string]string{
	ErrCeremony.Check:             "no unused, unexpired ceremony of this request matched",
	ErrMalformed.Check:            "the response is not a well-formed WebAuthn assertion",
	ErrNotPending.Check:           "the request is no longer pending",
	ErrExpired.Check:              "the request has expired",
	ErrUnknownCredential.Check:    "the credential is not enrolled",
	ErrRevokedCredential.Check:    "the credential was revoked",
	ErrApproverNotAllowed.Check:   "the credential's approver may not decide this request",
	ErrAlreadyCounted.Check:       "the credential's approver was already counted",
	ErrCredentialNotOffered.Check: "the credential was not offered for this ceremony",
	ErrCeremonyType.Check:         "clientData.type is not webauthn.get",
	ErrChallenge.Check:            "the key signed a different action than this request and decision",
	ErrReplay.Check:               "this assertion was already used",
	ErrOrigin.Check:               "the assertion names an origin that is not configured",
	ErrRPID.Check:                 "the authenticator data is not for this RP ID",
	ErrUserPresence.Check:         "the key did not report user presence",
	ErrUserVerification.Check:     "user verification was required and not reported",
	ErrSignature.Check:            "the signature did not verify",
	ErrCounter.Check:              "the sign counter did not increase: possible cloned key",
	ErrNoCredentials.Check:        "nobody allowed has an enrolled key",
	ErrNotBatchable.Check:         "a request of the batch may not be approved in a batch",
	ErrBatchSize.Check:            "the batch is empty, repeats a request or is over approval.max_batch",
}

// rejectedReason is the audit reason for a refusal: the check's name and its
// fixed words. claimed, when not empty, is the server's own description of
// the enrolled credential the response named (see claimedCredential).
func rejectedReason(err error, claimed string) string {
	var ce *CheckError
	if !errors.As(err, &ce) {
		return "refused"
	}
	words, ok := reasons[ce.Check]
	if !ok {
		words = "refused"
	}
	out := ce.Check + ": " + words
	if claimed != "" {
		out += "; " + claimed
	}
	return out
}

// claimedCredential describes the credential an unverified response named,
// in ids the server issued: only an enrolled credential is named, with the
// approver it is enrolled to, as a claim. An approval.rejected entry never
// attributes the attempt to that approver (no approver member): the
// signature did not verify, so anyone could have sent it.
func (s *Service) claimedCredential(ctx context.Context, rawID []byte) string {
	if len(rawID) == 0 || len(rawID) > 1023 {
		return ""
	}
	c, err := s.keys.Lookup(ctx, s.db, rawID)
	if err != nil || c == nil {
		return ""
	}
	return fmt.Sprintf("claimed credential %s (enrolled to %s), not verified", b64(c.ID), c.Approver)
}

// bounded cuts visitor text for the process log (slog quotes it).
func bounded(s string) string {
	const n = 200
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
