package approval

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// The checks of requests, as ceremony.CheckError values (those of keys and
// ceremonies are package ceremony's). The approval.rejected audit entry's
// reason is the Error text, which starts with the check name. Test with
// errors.Is.
var (
	ErrNotPending     = &ceremony.CheckError{Check: "not_pending", Words: "the request is no longer pending"}                  // request already decided
	ErrExpired        = &ceremony.CheckError{Check: "expired", Words: "the request has expired"}                               // request past expires_at
	ErrAlreadyCounted = &ceremony.CheckError{Check: "already_counted", Words: "the credential's approver was already counted"} // approver already counted towards quorum
	ErrNoCredentials  = &ceremony.CheckError{Check: "no_credentials", Words: "nobody allowed has an enrolled key"}             // nobody left who could sign
)

// verified is an assertion that passed every check.
type verified struct {
	*ceremony.Verified
	grant *grant.Terms // the grant this approval creates, if any
}

// assertionCheck is what an assertion must prove about requests.
type assertionCheck struct {
	req *row
	// batch, when set instead of req, is the set of requests one
	// assertion approves together (batch.go).
	batch    *batchSet
	decision vocab.Decision
	session  webauthn.SessionData
	// grant, when the ceremony approves with a grant: the key must have
	// signed the grant digest over the request's action digest.
	grant *grant.Terms
}

// verifyAssertion runs every check on one assertion, each with its own
// named error: first that every request it decides (ac.req, or each of
// ac.batch) is still pending and unexpired, then the checks of package
// ceremony, which asks here for the challenge and whether the key's
// approver may decide them. A refusal names the first check that failed.
func (s *Service) verifyAssertion(ctx context.Context, ac assertionCheck, p *protocol.ParsedCredentialAssertionData) (*verified, error) {
	now := s.now()
	reqs, err := ac.decided(now)
	if err != nil {
		return nil, err
	}
	v, err := s.keys.Verify(ctx, ceremony.Assertion{
		Session: ac.session, Decision: ac.decision,
		Challenge: func() ([32]byte, string, error) { return s.challenge(ac) },
		Allowed:   func(approver string) (vocab.UserVerification, error) { return ac.allowed(reqs, approver) },
	}, p)
	if err != nil {
		return nil, err
	}
	return &verified{Verified: v, grant: ac.grant}, nil
}

// decided is the requests the assertion decides, each still pending and
// unexpired. A batch cannot create a grant.
func (ac assertionCheck) decided(now time.Time) ([]*row, error) {
	reqs := []*row{ac.req}
	if ac.batch != nil {
		if ac.grant != nil {
			return nil, ceremony.Failf(ceremony.ErrChallenge, "a batch approval cannot create a standing grant")
		}
		reqs = ac.batch.rows
	}
	for _, r := range reqs {
		if r.State == vocab.StateExpired || (r.State == vocab.StatePending && !now.Before(r.ExpiresAt)) {
			return nil, ceremony.Failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
		}
		if r.State != vocab.StatePending {
			return nil, ceremony.Failf(ErrNotPending, "request %s is %s", r.ID, r.State)
		}
	}
	return reqs, nil
}

// allowed checks that the key's approver may decide every request and, to
// approve, was not counted on it yet. It returns the user verification
// the strictest of them needs.
func (ac assertionCheck) allowed(reqs []*row, approver string) (vocab.UserVerification, error) {
	var uv vocab.UserVerification
	for _, r := range reqs {
		if !slices.Contains(r.Approvers, approver) {
			return "", ceremony.Failf(ceremony.ErrApproverNotAllowed, "%s may not decide request %s", approver, r.ID)
		}
		if ac.decision == vocab.Approve && slices.Contains(r.Approvals, approver) {
			return "", ceremony.Failf(ErrAlreadyCounted, "%s already approved request %s", approver, r.ID)
		}
		if uv == "" || r.uv == vocab.UVRequired {
			uv = r.uv
		}
	}
	return uv, nil
}

// challenge is what the key must have signed for ac, and how to name it:
// the action digest of (request, decision), or a batch's challenge; over a
// grant's terms when the approval creates one.
func (s *Service) challenge(ac assertionCheck) ([32]byte, string, error) {
	if ac.batch != nil {
		return ac.batch.challenge, fmt.Sprintf("approve of these %d requests together", len(ac.batch.rows)), nil
	}
	what := fmt.Sprintf("%s of request %s", ac.decision, ac.req.ID)
	want, err := s.digest(ac.req, ac.decision)
	if err != nil || ac.grant == nil {
		return want, what, err
	}
	want, err = ac.grant.Digest(want)
	return want, what, err
}
