package approval

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// CheckError names the check that refused an assertion or a ceremony. The
// approval.rejected audit entry's reason is its Error text, which starts
// with the check name. Test with errors.Is against the Err* values below.
type CheckError struct {
	Check  string
	Detail string
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

func failf(base *CheckError, format string, args ...any) *CheckError {
	return &CheckError{Check: base.Check, Detail: fmt.Sprintf(format, args...)}
}

// The checks, in the order they run.
var (
	ErrCeremony             = &CheckError{Check: "ceremony"}               // unknown, used, expired or foreign ceremony
	ErrMalformed            = &CheckError{Check: "malformed"}              // the response does not parse
	ErrNotPending           = &CheckError{Check: "not_pending"}            // request already decided
	ErrExpired              = &CheckError{Check: "expired"}                // request past expires_at
	ErrUnknownCredential    = &CheckError{Check: "unknown_credential"}     // key not enrolled
	ErrRevokedCredential    = &CheckError{Check: "revoked_credential"}     // key revoked
	ErrApproverNotAllowed   = &CheckError{Check: "approver_not_allowed"}   // key's approver not allowed for this request
	ErrAlreadyCounted       = &CheckError{Check: "already_counted"}        // approver already counted towards quorum
	ErrCredentialNotOffered = &CheckError{Check: "credential_not_offered"} // key not in the ceremony's allowCredentials
	ErrCeremonyType         = &CheckError{Check: "type"}                   // clientData.type is not webauthn.get
	ErrChallenge            = &CheckError{Check: "challenge"}              // signed digest is not this (request, decision)
	ErrReplay               = &CheckError{Check: "replay"}                 // this exact assertion was used before
	ErrOrigin               = &CheckError{Check: "origin"}                 // origin not configured
	ErrRPID                 = &CheckError{Check: "rp_id"}                  // rpIdHash is not our RP ID
	ErrUserPresence         = &CheckError{Check: "user_presence"}          // UP flag not set
	ErrUserVerification     = &CheckError{Check: "user_verification"}      // UV required and not set
	ErrSignature            = &CheckError{Check: "signature"}              // go-webauthn refused it (signature and the rest)
	ErrCounter              = &CheckError{Check: "counter"}                // sign counter did not increase
	ErrNoCredentials        = &CheckError{Check: "no_credentials"}         // nobody left who could sign
)

// verified is an assertion that passed every check.
type verified struct {
	parsed   *protocol.ParsedCredentialAssertionData
	cred     *storedCred
	updated  *webauthn.Credential
	replayID []byte
	grant    *grantTerms // the grant this approval creates, if any
}

// assertionCheck is everything verifyAssertion needs; it touches no
// database, so it can be fuzzed.
type assertionCheck struct {
	req *row
	// batch, when set instead of req, is the set of requests one
	// assertion approves together (batch.go).
	batch    *batchSet
	decision vocab.Decision
	session  webauthn.SessionData
	now      time.Time
	lookup   func(rawID []byte) (*storedCred, error)
	handle   func(approverID string) ([]byte, error)
	seen     func(replayID []byte) (bool, error)
	// grant, when the ceremony approves with a grant: the key must have
	// signed the grant digest over the request's action digest.
	grant *grantTerms
}

// stored completes ac with the time and this service's database: the
// credentials, user handles and assertions already used.
func (s *Service) stored(ctx context.Context, ac assertionCheck) assertionCheck {
	ac.now = s.now()
	ac.lookup = func(id []byte) (*storedCred, error) { return s.credential(ctx, s.db, id) }
	ac.handle = func(a string) ([]byte, error) { return s.handle(ctx, a) }
	ac.seen = func(id []byte) (bool, error) {
		var n int
		err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_used_assertions WHERE hash = ?`, id).Scan(&n)
		return n > 0, err
	}
	return ac
}

// parseAssertion is the untrusted-input parser: the page's cred.toJSON().
func parseAssertion(raw []byte) (*protocol.ParsedCredentialAssertionData, error) {
	if !json.Valid(raw) {
		return nil, failf(ErrMalformed, "not JSON")
	}
	p, err := protocol.ParseCredentialRequestResponseBytes(raw)
	if err != nil {
		return nil, failf(ErrMalformed, "%s", protoDetail(err))
	}
	if len(p.RawID) == 0 || len(p.Response.Signature) == 0 {
		return nil, failf(ErrMalformed, "missing rawId or signature")
	}
	return p, nil
}

func protoDetail(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		if pe.DevInfo != "" {
			return pe.Details + " (" + pe.DevInfo + ")"
		}
		return pe.Details
	}
	return err.Error()
}

// verifyAssertion runs every check on one assertion, each with its own
// named error, then lets go-webauthn verify the signature and the rest.
// The assertion decides ac.req, or every request of ac.batch: each check
// about a request holds for each of them, and the key signed the batch
// challenge instead of one request's digest. A refusal names the first
// check that failed.
func (s *Service) verifyAssertion(ac assertionCheck, p *protocol.ParsedCredentialAssertionData) (*verified, error) {
	reqs, err := ac.decided()
	if err != nil {
		return nil, err
	}
	cd := p.Response.CollectedClientData
	if cd.Type != protocol.AssertCeremony {
		return nil, failf(ErrCeremonyType, "clientData.type is %q", cd.Type)
	}
	want, what, err := s.signedChallenge(ac, cd)
	if err != nil {
		return nil, err
	}
	replayID, err := ac.notReplayed(p)
	if err != nil {
		return nil, err
	}
	cred, err := ac.enrolled(p.RawID)
	if err != nil {
		return nil, err
	}
	uv, err := ac.allowed(reqs, cred)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(ac.session.AllowedCredentialIDs, func(id []byte) bool { return bytes.Equal(id, p.RawID) }) {
		return nil, failf(ErrCredentialNotOffered, "credential %s was not offered for this ceremony", b64(p.RawID))
	}
	if err := s.checkAuthenticator(cd, p.Response.AuthenticatorData, cred, uv, what); err != nil {
		return nil, err
	}
	updated, err := s.checkSignature(ac, p, cred, uv, want)
	if err != nil {
		return nil, err
	}
	return &verified{parsed: p, cred: cred, updated: updated, replayID: replayID, grant: ac.grant}, nil
}

// decided is the requests the assertion decides, each still pending and
// unexpired. A batch cannot create a grant.
func (ac assertionCheck) decided() ([]*row, error) {
	reqs := []*row{ac.req}
	if ac.batch != nil {
		if ac.grant != nil {
			return nil, failf(ErrChallenge, "a batch approval cannot create a standing grant")
		}
		reqs = ac.batch.rows
	}
	for _, r := range reqs {
		if r.State == vocab.StateExpired || (r.State == vocab.StatePending && !ac.now.Before(r.ExpiresAt)) {
			return nil, failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
		}
		if r.State != vocab.StatePending {
			return nil, failf(ErrNotPending, "request %s is %s", r.ID, r.State)
		}
	}
	return reqs, nil
}

// signedChallenge checks that the client data and the ceremony both carry
// the challenge ac needs signed (over a grant's terms when it creates one),
// and returns it and how to name it.
func (s *Service) signedChallenge(ac assertionCheck, cd protocol.CollectedClientData) ([32]byte, string, error) {
	want, what, err := s.challenge(ac)
	if err != nil {
		return want, what, err
	}
	if ac.grant != nil {
		if want, err = ac.grant.digest(want); err != nil {
			return want, what, err
		}
	}
	if cd.Challenge != b64(want[:]) || ac.session.Challenge != b64(want[:]) {
		return want, what, failf(ErrChallenge, "the key signed a different action than %s", what)
	}
	return want, what, nil
}

// notReplayed returns the assertion's replay id, refusing one already used.
func (ac assertionCheck) notReplayed(p *protocol.ParsedCredentialAssertionData) ([]byte, error) {
	replayID := sha256.Sum256(append(append([]byte{}, p.RawID...), p.Response.Signature...))
	seen, err := ac.seen(replayID[:])
	if err != nil {
		return nil, err
	}
	if seen {
		return nil, failf(ErrReplay, "this assertion was already used")
	}
	return replayID[:], nil
}

// enrolled is the enrolled, unrevoked key that made the assertion.
func (ac assertionCheck) enrolled(rawID []byte) (*storedCred, error) {
	cred, err := ac.lookup(rawID)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, failf(ErrUnknownCredential, "credential %s is not enrolled", b64(rawID))
	}
	if cred.revoked {
		return nil, failf(ErrRevokedCredential, "credential %s was revoked", b64(rawID))
	}
	return cred, nil
}

// allowed checks that the key's approver may decide every request and, to
// approve, was not counted on it yet. It returns the user verification
// the strictest of them needs.
func (ac assertionCheck) allowed(reqs []*row, cred *storedCred) (vocab.UserVerification, error) {
	var uv vocab.UserVerification
	for _, r := range reqs {
		if !slices.Contains(r.Approvers, cred.approverID) {
			return "", failf(ErrApproverNotAllowed, "%s may not decide request %s", cred.approverID, r.ID)
		}
		if ac.decision == vocab.Approve && slices.Contains(r.Approvals, cred.approverID) {
			return "", failf(ErrAlreadyCounted, "%s already approved request %s", cred.approverID, r.ID)
		}
		if uv == "" || r.uv == vocab.UVRequired {
			uv = r.uv
		}
	}
	return uv, nil
}

// checkAuthenticator checks where the assertion was made and what the key
// reports: a configured origin, our RP ID, user presence, user
// verification when uv requires it, and a sign counter that moved up.
func (s *Service) checkAuthenticator(cd protocol.CollectedClientData, ad protocol.AuthenticatorData, cred *storedCred, uv vocab.UserVerification, what string) error {
	if !slices.Contains(s.opts.Origins, cd.Origin) || cd.CrossOrigin {
		return failf(ErrOrigin, "origin %q (cross-origin %v) is not one of %v", cd.Origin, cd.CrossOrigin, s.opts.Origins)
	}
	rpHash := sha256.Sum256([]byte(s.opts.RPID))
	if !bytes.Equal(ad.RPIDHash, rpHash[:]) {
		return failf(ErrRPID, "authenticator data is not for RP ID %q", s.opts.RPID)
	}
	if !ad.Flags.HasUserPresent() {
		return failf(ErrUserPresence, "the key did not report user presence")
	}
	if uv == vocab.UVRequired && !ad.Flags.HasUserVerified() {
		return failf(ErrUserVerification, "%s requires user verification (PIN or biometric)", what)
	}
	if ad.Counter != 0 || cred.signCount != 0 {
		if ad.Counter <= cred.signCount {
			return failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", ad.Counter, cred.signCount)
		}
	}
	return nil
}

// checkSignature lets go-webauthn verify the signature (and the rest) for
// the one key, the challenge want and the user verification uv.
func (s *Service) checkSignature(ac assertionCheck, p *protocol.ParsedCredentialAssertionData, cred *storedCred, uv vocab.UserVerification, want [32]byte) (*webauthn.Credential, error) {
	h, err := ac.handle(cred.approverID)
	if err != nil {
		return nil, err
	}
	sess := ac.session
	sess.UserID = h
	sess.AllowedCredentialIDs = [][]byte{p.RawID}
	sess.Challenge = b64(want[:])
	sess.UserVerification = uvRequirement(uv)
	user := approverUser{id: cred.approverID, name: s.approverName(cred.approverID), handle: h, creds: []webauthn.Credential{cred.cred}}
	updated, err := s.wa.ValidateLogin(user, sess, p)
	if err != nil {
		return nil, failf(ErrSignature, "%s", protoDetail(err))
	}
	if updated.Authenticator.CloneWarning {
		return nil, failf(ErrCounter, "go-webauthn flagged a possible clone")
	}
	return updated, nil
}

// challenge is what the key must have signed for ac, and how to name it:
// the action digest of (request, decision), or a batch's challenge.
func (s *Service) challenge(ac assertionCheck) ([32]byte, string, error) {
	if ac.batch != nil {
		return ac.batch.challenge, fmt.Sprintf("approve of these %d requests together", len(ac.batch.rows)), nil
	}
	want, err := s.digest(ac.req, ac.decision)
	return want, fmt.Sprintf("%s of request %s", ac.decision, ac.req.ID), err
}
