package approval

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/approval/votes"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// DecisionOptions is what the page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON.
type DecisionOptions struct {
	Ceremony  string                                     `json:"ceremony"`
	Decision  vocab.Decision                             `json:"decision"`
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
}

// BeginDecision starts a WebAuthn assertion whose challenge is the action
// digest of (request, decision). It allows the keys of every approver
// allowed for the request; for approve, minus those already counted.
func (s *Service) BeginDecision(ctx context.Context, requestID string, decision vocab.Decision) (*DecisionOptions, error) {
	return s.beginDecision(ctx, requestID, decision, nil)
}

// beginDecision is BeginDecision; with choice, the approval also creates
// the grant the approver chose (BeginGrant), and the challenge is the
// grant digest.
func (s *Service) beginDecision(ctx context.Context, requestID string, decision vocab.Decision, choice *grant.Choice) (*DecisionOptions, error) {
	if decision != vocab.Approve && decision != vocab.Deny {
		return nil, fmt.Errorf("%w: decision must be approve or deny", ErrInvalidRequest)
	}
	if !ceremony.ValidID(requestID) {
		return nil, ErrNotFound
	}
	r, err := s.load(ctx, s.db, requestID)
	if err != nil {
		return nil, err
	}
	if r.State != vocab.StatePending {
		return nil, ceremony.Failf(ErrNotPending, "request is %s", r.State)
	}
	if !s.now().Before(r.ExpiresAt) {
		s.expire(ctx, requestID)
		return nil, ceremony.Failf(ErrExpired, "expired at %s", digest.FormatTime(r.ExpiresAt))
	}
	if err := frozenCheck(ctx, s.db, r.Agent); err != nil {
		return nil, err
	}
	who := r.Approvers
	if decision == vocab.Approve {
		who = slices.DeleteFunc(slices.Clone(who), func(a string) bool { return slices.Contains(r.Approvals, a) })
	}
	keys, err := s.keys.Active(ctx, who)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, ceremony.Failf(ErrNoCredentials, "none of %v has an enrolled key", who)
	}
	challenge, err := s.digest(r, decision)
	if err != nil {
		return nil, err
	}
	var terms *grant.Terms
	if choice != nil {
		if terms, err = s.chooseGrant(ctx, r, *choice); err != nil {
			return nil, err
		}
		if challenge, err = terms.Digest(challenge); err != nil {
			return nil, err
		}
	}
	id, options, err := s.keys.BeginAssertion(ctx, "decision", requestID, decision, challenge, keys, r.uv)
	if err != nil {
		return nil, err
	}
	if terms != nil {
		if err := s.grants.PutCeremony(ctx, id, terms); err != nil {
			return nil, err
		}
	}
	return &DecisionOptions{Ceremony: id, Decision: decision, PublicKey: options}, nil
}

// digest is the action digest of r for decision.
func (s *Service) digest(r *row, decision vocab.Decision) ([32]byte, error) {
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

// FinishDecision verifies the page's assertion for a ceremony started by
// BeginDecision and records the decision. Every refusal is recorded as
// approval.rejected with the failed check as its reason.
func (s *Service) FinishDecision(ctx context.Context, requestID, ceremonyID string, response []byte) (*Request, error) {
	if !ceremony.ValidID(requestID) {
		return nil, ErrNotFound
	}
	decision, session, err := s.keys.Take(ctx, ceremonyID, "decision", requestID)
	var p *protocol.ParsedCredentialAssertionData
	var terms *grant.Terms
	if err == nil {
		terms, err = s.grants.Ceremony(ctx, ceremonyID)
	}
	if err == nil {
		p, err = ceremony.ParseAssertion(response)
	}
	var v *verified
	var r *row
	if err == nil {
		r, err = s.load(ctx, s.db, requestID)
	}
	if err == nil {
		v, err = s.verifyAssertion(ctx, assertionCheck{req: r, decision: decision, session: session, grant: terms}, p)
	}
	if err == nil {
		err = s.commitDecision(ctx, r, decision, v)
	}
	if err != nil {
		var ce *ceremony.CheckError
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
	s.announceDecision(got, v.Key.Approver)
	return got, err
}

// commitDecision counts a verified assertion in one transaction that
// re-checks everything another decision could have changed meanwhile.
func (s *Service) commitDecision(ctx context.Context, r0 *row, decision vocab.Decision, v *verified) error {
	// countDecision counts the quorum from the votes it reads: two
	// approvers deciding at once on PostgreSQL must not both read one
	// vote, which is why InTx is SERIALIZABLE there; the later one runs
	// again and reads both. Everything it does is in tx.
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.keys.Spend(ctx, tx, r0.ID, v.Verified); err != nil {
			return err
		}
		return s.countDecision(ctx, tx, r0.ID, decision, v, nil)
	})
}

// countDecision records a verified assertion's decision on one request
// inside tx, re-reading the request: its vote, its audit entries, and,
// when it completes the quorum or denies, the request's new state. in,
// when set, is the request's place in the batch the assertion signed.
func (s *Service) countDecision(ctx context.Context, tx *sql.Tx, id string, decision vocab.Decision, v *verified, in *batchPlace) error {
	r, err := s.load(ctx, tx, id)
	if err != nil {
		return err
	}
	now := s.now()
	if r.State != vocab.StatePending {
		return ceremony.Failf(ErrNotPending, "request %s became %s", r.ID, r.State)
	}
	if !now.Before(r.ExpiresAt) {
		return ceremony.Failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
	}
	// The freeze's transaction cancels what it can; this refuses any
	// decision on a request of a frozen agent that it could not.
	if err := frozenCheck(ctx, tx, r.Agent); err != nil {
		return err
	}
	approver := v.Key.Approver
	if decision == vocab.Approve && slices.Contains(r.Approvals, approver) {
		return ceremony.Failf(ErrAlreadyCounted, "%s already approved request %s", approver, r.ID)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_votes (request_id, approver_id, credential_id, decision, created_at) VALUES (?,?,?,?,?)`,
		r.ID, approver, v.Key.ID, decision, now.UnixNano()); err != nil {
		if store.Conflict(err) {
			// Another approver's decision committed first (PostgreSQL):
			// InTx runs this again, and then sees it.
			return err
		}
		return ceremony.Failf(ErrAlreadyCounted, "%s already decided request %s", approver, r.ID)
	}
	raw := v.Parsed.Raw.AssertionResponse
	if err := votes.Keep(ctx, tx, r.ID, approver, decision, digest.AssertionSHA256(raw.AuthenticatorData, raw.ClientDataJSON, raw.Signature)); err != nil {
		return err
	}
	entry := s.assertionEntry(r, decision, v, now)
	if in != nil {
		entry.BatchDigests, entry.BatchPosition = in.digests, in.position
	}
	if v.grant != nil {
		if in != nil {
			return ceremony.Failf(ceremony.ErrChallenge, "a batch approval cannot create a standing grant")
		}
		if err := s.createGrant(ctx, tx, r, approver, v.grant, &entry, now); err != nil {
			return err
		}
	}
	switch decision {
	case vocab.Deny:
		entry.Kind = vocab.KindApprovalDenied
		if err := s.transition(ctx, tx, r.ID, vocab.StateDenied, approver, "denied by "+approver); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, r.ID, entry)
	default:
		entry.Kind = vocab.KindApprovalAssertion
		if err := s.enqueue(ctx, tx, r.ID, entry); err != nil {
			return err
		}
		approvals := append(slices.Clone(r.Approvals), approver)
		if len(approvals) < r.Quorum {
			return nil
		}
		by := joinComma(approvals)
		if err := s.transition(ctx, tx, r.ID, vocab.StateApproved, by, fmt.Sprintf("quorum %d reached", r.Quorum)); err != nil {
			return err
		}
		// Assertions (their seqs) are filled in when the outbox
		// appends this entry, after the assertions themselves.
		done := s.requestEntry(r, vocab.KindApprovalApproved, fmt.Sprintf("quorum %d of %d reached", len(approvals), r.Quorum))
		done.Approvers = approvals
		done.Decision = string(vocab.Approve)
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

func (s *Service) transition(ctx context.Context, tx *sql.Tx, id string, state vocab.State, by, reason string) error {
	res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
		WHERE id = ? AND state = 'pending' AND expires_at > ?`, state, by, s.now().UnixNano(), reason, id, s.now().Unix())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ceremony.Failf(ErrNotPending, "request was decided concurrently")
	}
	return pending.Ended(ctx, tx, id)
}

// assertionEntry carries everything the offline verifier needs to
// recompute the digest and check the signature against the enrolled key,
// and when it was counted (decided at now), to check it beat the expiry.
func (s *Service) assertionEntry(r *row, decision vocab.Decision, v *verified, now time.Time) audit.Entry {
	e := s.requestEntry(r, "", "")
	raw := v.Parsed.Raw.AssertionResponse
	e.Approver = v.Key.Approver
	e.CredentialID = ceremony.B64(v.Key.ID)
	e.Decision = string(decision)
	e.DecidedAt = now.UTC().Format(audit.TimeFormat)
	e.Origin = v.Parsed.Response.CollectedClientData.Origin
	e.RPID = s.opts.RPID
	e.UserVerified = v.Parsed.Response.AuthenticatorData.Flags.HasUserVerified()
	e.AuthenticatorData = ceremony.B64(raw.AuthenticatorData)
	e.ClientDataJSON = ceremony.B64(raw.ClientDataJSON)
	e.Signature = ceremony.B64(raw.Signature)
	return s.opts.People.Stamped(e) // who the approver is at the identity provider, if from it
}

// recordRejected writes approval.rejected for a refused assertion of a
// request the server issued: the reason is the check's fixed words and, as a
// claim, the enrolled credential the response named. Nothing the visitor
// sent is quoted: not the error's detail, not the origin or client data of
// an unverified response. A refusal for a request that does not exist is
// not recorded (its id is the visitor's, not ours); the process log has it.
func (s *Service) recordRejected(ctx context.Context, requestID string, decision vocab.Decision, p *protocol.ParsedCredentialAssertionData, cause error) error {
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
		claimed = s.keys.Claimed(ctx, p.RawID)
	}
	e := s.requestEntry(r, vocab.KindApprovalRejected, ceremony.Reason(cause, claimed))
	e.Decision = string(decision)
	e.RPID = s.opts.RPID
	return s.record(ctx, e)
}
