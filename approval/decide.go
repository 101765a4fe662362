package approval

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
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

// ceremonyTTL bounds how long a started ceremony can be finished.
const ceremonyTTL = 5 * time.Minute

// DecisionOptions is what the page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON.
type DecisionOptions struct {
	Ceremony  string                                     `json:"ceremony"`
	Decision  string                                     `json:"decision"`
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
}

// BeginDecision starts a WebAuthn assertion whose challenge is the action
// digest of (request, decision). It allows the keys of every approver
// allowed for the request; for approve, minus those already counted.
func (s *Service) BeginDecision(ctx context.Context, requestID, decision string) (*DecisionOptions, error) {
	return s.beginDecision(ctx, requestID, decision, nil)
}

// beginDecision is BeginDecision; with choice, the approval also creates
// the grant the approver chose (BeginGrant), and the challenge is the
// grant digest.
func (s *Service) beginDecision(ctx context.Context, requestID, decision string, choice *GrantChoice) (*DecisionOptions, error) {
	if decision != digest.Approve && decision != digest.Deny {
		return nil, fmt.Errorf("%w: decision must be approve or deny", ErrInvalidRequest)
	}
	if !validID(requestID) {
		return nil, ErrNotFound
	}
	r, err := s.load(ctx, s.db, requestID)
	if err != nil {
		return nil, err
	}
	if r.State != StatePending {
		return nil, failf(ErrNotPending, "request is %s", r.State)
	}
	if !s.now().Before(r.ExpiresAt) {
		s.expire(ctx, requestID)
		return nil, failf(ErrExpired, "expired at %s", digest.FormatTime(r.ExpiresAt))
	}
	if err := frozenCheck(ctx, s.db, r.Agent); err != nil {
		return nil, err
	}
	who := r.Approvers
	if decision == digest.Approve {
		who = slices.DeleteFunc(slices.Clone(who), func(a string) bool { return slices.Contains(r.Approvals, a) })
	}
	creds, err := s.activeCredentials(ctx, who)
	if err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, failf(ErrNoCredentials, "none of %v has an enrolled key", who)
	}
	var allow []protocol.CredentialDescriptor
	for _, c := range creds {
		allow = append(allow, c.cred.Descriptor())
	}
	challenge, err := s.digest(r, decision)
	if err != nil {
		return nil, err
	}
	var terms *grantTerms
	if choice != nil {
		if terms, err = s.chooseGrant(ctx, r, *choice); err != nil {
			return nil, err
		}
		if challenge, err = terms.digest(challenge); err != nil {
			return nil, err
		}
	}
	assertion, session, err := s.wa.BeginDiscoverableLogin(
		webauthn.WithChallenge(challenge[:]),
		webauthn.WithAllowedCredentials(allow),
		webauthn.WithUserVerification(uvRequirement(r.uv)),
	)
	if err != nil {
		return nil, fmt.Errorf("approval: begin assertion: %w", err)
	}
	// The ceremony outlives the request on purpose: an assertion that
	// arrives late is refused by the "expired" check, which says so.
	id, err := s.storeCeremony(ctx, "decision", requestID, nil, decision, session, s.now().Add(ceremonyTTL))
	if err != nil {
		return nil, err
	}
	if terms != nil {
		if err := s.storeGrantCeremony(ctx, id, terms); err != nil {
			return nil, err
		}
	}
	return &DecisionOptions{Ceremony: id, Decision: decision, PublicKey: assertion.Response}, nil
}

func uvRequirement(uv string) protocol.UserVerificationRequirement {
	switch uv {
	case "required":
		return protocol.VerificationRequired
	case "discouraged":
		return protocol.VerificationDiscouraged
	}
	return protocol.VerificationPreferred
}

// digest is the action digest of r for decision.
func (s *Service) digest(r *row, decision string) ([32]byte, error) {
	var sum [32]byte
	b, err := hexDecode32(r.argsSHA256)
	if err != nil {
		return sum, err
	}
	return digest.Compute(digest.Action{
		RequestID:            r.ID,
		Decision:             decision,
		AuthorizationDetails: r.AuthorizationDetails,
		Tool:                 r.Tool,
		ArgsSHA256:           b,
		Display:              r.Display,
		Nonce:                r.nonce,
		ExpiresAt:            r.ExpiresAt,
	})
}

func hexDecode32(h string) ([32]byte, error) {
	var out [32]byte
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return out, fmt.Errorf("approval: stored args_sha256 %q is not 32 hex bytes", h)
	}
	copy(out[:], b)
	return out, nil
}

func (s *Service) storeCeremony(ctx context.Context, kind, requestID string, enrollment []byte, decision string, session *webauthn.SessionData, expires time.Time) (string, error) {
	b, err := json.Marshal(session)
	if err != nil {
		return "", err
	}
	id := uuid.NewString()
	_, err = s.db.ExecContext(ctx, `INSERT INTO approval_ceremonies (id, kind, request_id, enrollment, decision, session, expires_at) VALUES (?,?,?,?,?,?,?)`,
		id, kind, requestID, enrollment, decision, b, expires.UnixNano())
	return id, err
}

// takeCeremony consumes a ceremony: it is used up by the first attempt to
// finish it, whatever the outcome.
func (s *Service) takeCeremony(ctx context.Context, id, kind, requestID string, enrollment []byte) (decision string, session webauthn.SessionData, err error) {
	if !validID(id) {
		return "", session, failf(ErrCeremony, "malformed ceremony id")
	}
	var raw []byte
	var expires int64
	err = s.db.QueryRowContext(ctx, `UPDATE approval_ceremonies SET used = 1
		WHERE id = ? AND kind = ? AND request_id = ? AND COALESCE(enrollment, x'') = ? AND used = 0
		RETURNING decision, session, expires_at`, id, kind, requestID, append([]byte{}, enrollment...)).Scan(&decision, &raw, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return "", session, failf(ErrCeremony, "no unused ceremony %s for this request", id)
	}
	if err != nil {
		return "", session, err
	}
	if !s.now().Before(time.Unix(0, expires)) {
		return "", session, failf(ErrCeremony, "ceremony expired")
	}
	if err := json.Unmarshal(raw, &session); err != nil {
		return "", session, fmt.Errorf("approval: stored session: %w", err)
	}
	return decision, session, nil
}

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
	decision string
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
// challenge instead of one request's digest.
func (s *Service) verifyAssertion(ac assertionCheck, p *protocol.ParsedCredentialAssertionData) (*verified, error) {
	reqs := []*row{ac.req}
	if ac.batch != nil {
		if ac.grant != nil {
			return nil, failf(ErrChallenge, "a batch approval cannot create a standing grant")
		}
		reqs = ac.batch.rows
	}
	for _, r := range reqs {
		if r.State == StateExpired || (r.State == StatePending && !ac.now.Before(r.ExpiresAt)) {
			return nil, failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
		}
		if r.State != StatePending {
			return nil, failf(ErrNotPending, "request %s is %s", r.ID, r.State)
		}
	}
	cd := p.Response.CollectedClientData
	if cd.Type != protocol.AssertCeremony {
		return nil, failf(ErrCeremonyType, "clientData.type is %q", cd.Type)
	}
	want, what, err := s.challenge(ac)
	if err != nil {
		return nil, err
	}
	if ac.grant != nil {
		if want, err = ac.grant.digest(want); err != nil {
			return nil, err
		}
	}
	if cd.Challenge != b64(want[:]) || ac.session.Challenge != b64(want[:]) {
		return nil, failf(ErrChallenge, "the key signed a different action than %s", what)
	}
	replayID := sha256.Sum256(append(append([]byte{}, p.RawID...), p.Response.Signature...))
	if seen, err := ac.seen(replayID[:]); err != nil {
		return nil, err
	} else if seen {
		return nil, failf(ErrReplay, "this assertion was already used")
	}
	cred, err := ac.lookup(p.RawID)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, failf(ErrUnknownCredential, "credential %s is not enrolled", b64(p.RawID))
	}
	if cred.revoked {
		return nil, failf(ErrRevokedCredential, "credential %s was revoked", b64(p.RawID))
	}
	uv := ""
	for _, r := range reqs {
		if !slices.Contains(r.Approvers, cred.approverID) {
			return nil, failf(ErrApproverNotAllowed, "%s may not decide request %s", cred.approverID, r.ID)
		}
		if ac.decision == digest.Approve && slices.Contains(r.Approvals, cred.approverID) {
			return nil, failf(ErrAlreadyCounted, "%s already approved request %s", cred.approverID, r.ID)
		}
		if uv == "" || r.uv == "required" {
			uv = r.uv
		}
	}
	if !slices.ContainsFunc(ac.session.AllowedCredentialIDs, func(id []byte) bool { return bytes.Equal(id, p.RawID) }) {
		return nil, failf(ErrCredentialNotOffered, "credential %s was not offered for this ceremony", b64(p.RawID))
	}
	if !slices.Contains(s.opts.Origins, cd.Origin) || cd.CrossOrigin {
		return nil, failf(ErrOrigin, "origin %q (cross-origin %v) is not one of %v", cd.Origin, cd.CrossOrigin, s.opts.Origins)
	}
	rpHash := sha256.Sum256([]byte(s.opts.RPID))
	ad := p.Response.AuthenticatorData
	if !bytes.Equal(ad.RPIDHash, rpHash[:]) {
		return nil, failf(ErrRPID, "authenticator data is not for RP ID %q", s.opts.RPID)
	}
	if !ad.Flags.HasUserPresent() {
		return nil, failf(ErrUserPresence, "the key did not report user presence")
	}
	if uv == "required" && !ad.Flags.HasUserVerified() {
		return nil, failf(ErrUserVerification, "%s requires user verification (PIN or biometric)", what)
	}
	if ad.Counter != 0 || cred.signCount != 0 {
		if ad.Counter <= cred.signCount {
			return nil, failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", ad.Counter, cred.signCount)
		}
	}
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
	return &verified{parsed: p, cred: cred, updated: updated, replayID: replayID[:], grant: ac.grant}, nil
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

// FinishDecision verifies the page's assertion for a ceremony started by
// BeginDecision and records the decision. Every refusal is recorded as
// approval.rejected with the failed check as its reason.
func (s *Service) FinishDecision(ctx context.Context, requestID, ceremonyID string, response []byte) (*Request, error) {
	if !validID(requestID) {
		return nil, ErrNotFound
	}
	decision, session, err := s.takeCeremony(ctx, ceremonyID, "decision", requestID, nil)
	var p *protocol.ParsedCredentialAssertionData
	var grant *grantTerms
	if err == nil {
		grant, err = s.grantCeremony(ctx, ceremonyID)
	}
	if err == nil {
		p, err = parseAssertion(response)
	}
	var v *verified
	var r *row
	if err == nil {
		r, err = s.load(ctx, s.db, requestID)
	}
	if err == nil {
		v, err = s.verifyAssertion(s.stored(ctx, assertionCheck{req: r, decision: decision, session: session, grant: grant}), p)
	}
	if err == nil {
		err = s.commitDecision(ctx, r, decision, v)
	}
	if err != nil {
		var ce *CheckError
		if errors.As(err, &ce) || errors.Is(err, ErrNotFound) {
			if rerr := s.recordRejected(ctx, requestID, decision, p, err); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
		if errors.Is(err, ErrExpired) {
			s.expire(ctx, requestID)
		}
		return nil, err
	}
	if err := s.flush(ctx, false); err != nil {
		return nil, err
	}
	s.notify(requestID)
	got, err := s.Get(ctx, requestID)
	s.announceDecision(got, v.cred.approverID)
	return got, err
}

// commitDecision counts a verified assertion in one transaction that
// re-checks everything another decision could have changed meanwhile.
func (s *Service) commitDecision(ctx context.Context, r0 *row, decision string, v *verified) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.useAssertion(ctx, tx, r0.ID, v); err != nil {
			return err
		}
		return s.countDecision(ctx, tx, r0.ID, decision, v, nil)
	})
}

// useAssertion spends a verified assertion inside tx: it can never be
// used again, and its key's sign counter moves up to it.
func (s *Service) useAssertion(ctx context.Context, tx *sql.Tx, requestID string, v *verified) error {
	now := s.now()
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_used_assertions (hash, request_id, created_at) VALUES (?,?,?)`, v.replayID, requestID, now.UnixNano()); err != nil {
		return failf(ErrReplay, "this assertion was already used")
	}
	newCount := v.parsed.Response.AuthenticatorData.Counter
	credJSON, err := json.Marshal(v.updated)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ?
		WHERE id = ? AND revoked_at = 0 AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		newCount, credJSON, now.UnixNano(), v.cred.id, newCount, newCount)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return failf(ErrCounter, "sign counter %d did not increase (or the key was revoked meanwhile)", newCount)
	}
	return nil
}

// countDecision records a verified assertion's decision on one request
// inside tx, re-reading the request: its vote, its audit entries, and,
// when it completes the quorum or denies, the request's new state. in,
// when set, is the request's place in the batch the assertion signed.
func (s *Service) countDecision(ctx context.Context, tx *sql.Tx, id, decision string, v *verified, in *batchPlace) error {
	r, err := s.load(ctx, tx, id)
	if err != nil {
		return err
	}
	now := s.now()
	if r.State != StatePending {
		return failf(ErrNotPending, "request %s became %s", r.ID, r.State)
	}
	if !now.Before(r.ExpiresAt) {
		return failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
	}
	// The freeze's transaction cancels what it can; this refuses any
	// decision on a request of a frozen agent that it could not.
	if err := frozenCheck(ctx, tx, r.Agent); err != nil {
		return err
	}
	approver := v.cred.approverID
	if decision == digest.Approve && slices.Contains(r.Approvals, approver) {
		return failf(ErrAlreadyCounted, "%s already approved request %s", approver, r.ID)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_votes (request_id, approver_id, credential_id, decision, created_at) VALUES (?,?,?,?,?)`,
		r.ID, approver, v.cred.id, decision, now.UnixNano()); err != nil {
		return failf(ErrAlreadyCounted, "%s already decided request %s", approver, r.ID)
	}
	if err := keepAssertion(ctx, tx, r.ID, approver, decision, v); err != nil {
		return err
	}
	entry := s.assertionEntry(r, decision, v, now)
	if in != nil {
		entry.BatchDigests, entry.BatchPosition = in.digests, in.position
	}
	if v.grant != nil {
		if in != nil {
			return failf(ErrChallenge, "a batch approval cannot create a standing grant")
		}
		if err := s.createGrant(ctx, tx, r, approver, v.grant, &entry, now); err != nil {
			return err
		}
	}
	switch decision {
	case digest.Deny:
		entry.Kind = audit.KindApprovalDenied
		if err := s.transition(ctx, tx, r.ID, StateDenied, approver, "denied by "+approver); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, r.ID, entry)
	default:
		entry.Kind = audit.KindApprovalAssertion
		if err := s.enqueue(ctx, tx, r.ID, entry); err != nil {
			return err
		}
		approvals := append(slices.Clone(r.Approvals), approver)
		if len(approvals) < r.Quorum {
			return nil
		}
		by := joinComma(approvals)
		if err := s.transition(ctx, tx, r.ID, StateApproved, by, fmt.Sprintf("quorum %d reached", r.Quorum)); err != nil {
			return err
		}
		// Assertions (their seqs) are filled in when the outbox
		// appends this entry, after the assertions themselves.
		done := s.requestEntry(r, audit.KindApprovalApproved, fmt.Sprintf("quorum %d of %d reached", len(approvals), r.Quorum))
		done.Approvers = approvals
		done.Decision = digest.Approve
		return s.enqueue(ctx, tx, r.ID, done)
	}
}

func joinComma(xs []string) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

func (s *Service) transition(ctx context.Context, tx *sql.Tx, id, state, by, reason string) error {
	res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
		WHERE id = ? AND state = 'pending' AND expires_at > ?`, state, by, s.now().UnixNano(), reason, id, s.now().Unix())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return failf(ErrNotPending, "request was decided concurrently")
	}
	return nil
}

// assertionEntry carries everything the offline verifier needs to
// recompute the digest and check the signature against the enrolled key,
// and when it was counted (decided at now), to check it beat the expiry.
func (s *Service) assertionEntry(r *row, decision string, v *verified, now time.Time) audit.Entry {
	e := s.requestEntry(r, "", "")
	raw := v.parsed.Raw.AssertionResponse
	e.Approver = v.cred.approverID
	e.CredentialID = b64(v.cred.id)
	e.Decision = decision
	e.DecidedAt = now.UTC().Format(audit.TimeFormat)
	e.Origin = v.parsed.Response.CollectedClientData.Origin
	e.RPID = s.opts.RPID
	e.UserVerified = v.parsed.Response.AuthenticatorData.Flags.HasUserVerified()
	e.AuthenticatorData = b64(raw.AuthenticatorData)
	e.ClientDataJSON = b64(raw.ClientDataJSON)
	e.Signature = b64(raw.Signature)
	return e
}

// recordRejected writes approval.rejected for a refused assertion of a
// request the server issued: the reason is the check's fixed words and, as a
// claim, the enrolled credential the response named. Nothing the visitor
// sent is quoted: not the error's detail, not the origin or client data of
// an unverified response. A refusal for a request that does not exist is
// not recorded (its id is the visitor's, not ours); the process log has it.
func (s *Service) recordRejected(ctx context.Context, requestID, decision string, p *protocol.ParsedCredentialAssertionData, cause error) error {
	r, err := s.load(ctx, s.db, requestID)
	if errors.Is(err, ErrNotFound) {
		s.opts.Logger.Warn("approval: refused a decision on an unknown request", "request", bounded(requestID), "err", cause)
		return nil
	}
	if err != nil {
		return err
	}
	var claimed string
	if p != nil {
		claimed = s.claimedCredential(ctx, p.RawID)
	}
	e := s.requestEntry(r, audit.KindApprovalRejected, rejectedReason(cause, claimed))
	e.Decision = decision
	e.RPID = s.opts.RPID
	return s.record(ctx, e)
}
