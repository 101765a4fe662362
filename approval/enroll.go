package approval

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/vocab"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/audit"
)

// CreateEnrollment issues a one-time enrollment link for an approver:
// single use, valid for EnrollTTL, bound to that approver. Recorded as
// enrollment.created.
func (s *Service) CreateEnrollment(ctx context.Context, approverID string) (string, error) {
	if _, ok := s.approvers[approverID]; !ok {
		return "", fmt.Errorf("%w %q (not in config)", ErrUnknownApprover, approverID)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	token := b64(tok)
	hash := sha256.Sum256([]byte(token))
	now := s.now()
	expires := now.Add(s.opts.EnrollTTL)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_enrollments (token_hash, approver_id, created_at, expires_at) VALUES (?,?,?,?)`,
			hash[:], approverID, now.UnixNano(), expires.UnixNano()); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind:      vocab.KindEnrollmentCreated,
			Approver:  approverID,
			ExpiresAt: expires.UTC().Format(time.RFC3339),
			Reason:    "one-time enrollment link issued",
		})
	})
	if err != nil {
		return "", fmt.Errorf("approval: create enrollment: %w", err)
	}
	if err := s.flush(ctx, false); err != nil {
		s.db.ExecContext(context.WithoutCancel(ctx), `UPDATE approval_enrollments SET used_at = ? WHERE token_hash = ?`, now.UnixNano(), hash[:])
		return "", err
	}
	return s.enrollURL(token), nil
}

// enrollment is a usable enrollment link.
type enrollment struct {
	hash       []byte
	approverID string
	verified   bool
	vouchedBy  []byte // the existing key whose assertion allowed a further key
	expires    time.Time
}

func (s *Service) enrollment(ctx context.Context, token string) (*enrollment, error) {
	if !validToken(token) {
		return nil, ErrEnrollment
	}
	hash := sha256.Sum256([]byte(token))
	var (
		e                         enrollment
		expires, verified, usedAt int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT approver_id, expires_at, verified_at, verified_by, used_at FROM approval_enrollments WHERE token_hash = ?`, hash[:]).
		Scan(&e.approverID, &expires, &verified, &e.vouchedBy, &usedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrEnrollment
	}
	if err != nil {
		return nil, err
	}
	e.hash = hash[:]
	e.verified = verified != 0
	e.expires = time.Unix(0, expires)
	if usedAt != 0 || !s.now().Before(e.expires) {
		return nil, ErrEnrollment
	}
	if _, ok := s.approvers[e.approverID]; !ok {
		return nil, fmt.Errorf("%w: approver %q is no longer configured", ErrEnrollment, e.approverID)
	}
	return &e, nil
}

// EnrollmentOptions is the next WebAuthn step of an enrollment: "get" (an
// existing key vouches for the new one) or "create" (register the new key).
type EnrollmentOptions struct {
	Ceremony     string          `json:"ceremony"`
	Step         string          `json:"step"`
	ApproverID   string          `json:"approver"`
	ApproverName string          `json:"approverName"`
	PublicKey    json.RawMessage `json:"publicKey"`
}

// BeginEnrollment starts the next step of the enrollment behind token.
func (s *Service) BeginEnrollment(ctx context.Context, token string) (*EnrollmentOptions, error) {
	e, err := s.enrollment(ctx, token)
	if err != nil {
		return nil, err
	}
	existing, err := s.activeCredentials(ctx, []string{e.approverID})
	if err != nil {
		return nil, err
	}
	h, err := s.handle(ctx, e.approverID)
	if err != nil {
		return nil, err
	}
	user := approverUser{id: e.approverID, name: s.approverName(e.approverID), handle: h}
	for _, c := range existing {
		user.creds = append(user.creds, c.cred)
	}
	out := &EnrollmentOptions{ApproverID: e.approverID, ApproverName: user.name}
	var (
		session *webauthn.SessionData
		options any
	)
	if len(existing) > 0 && !e.verified {
		out.Step = "get"
		a, sess, err := s.wa.BeginLogin(user, webauthn.WithUserVerification(protocol.VerificationPreferred))
		if err != nil {
			return nil, fmt.Errorf("approval: begin enrollment assertion: %w", err)
		}
		session, options = sess, a.Response
	} else {
		out.Step = "create"
		c, sess, err := s.wa.BeginRegistration(user,
			webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
				ResidentKey:      protocol.ResidentKeyRequirementPreferred,
				UserVerification: protocol.VerificationPreferred,
			}),
			webauthn.WithConveyancePreference(s.conveyance()),
			webauthn.WithExclusions(webauthn.Credentials(user.creds).CredentialDescriptors()),
		)
		if err != nil {
			return nil, fmt.Errorf("approval: begin registration: %w", err)
		}
		session, options = sess, c.Response
	}
	if out.PublicKey, err = json.Marshal(options); err != nil {
		return nil, err
	}
	expires := s.now().Add(ceremonyTTL)
	if e.expires.Before(expires) {
		expires = e.expires
	}
	if out.Ceremony, err = s.storeCeremony(ctx, "enroll-"+out.Step, "", e.hash, "", session, expires); err != nil {
		return nil, err
	}
	return out, nil
}

// EnrollmentResult says what FinishEnrollment did.
type EnrollmentResult struct {
	Done         bool   `json:"done"` // false: the vouching assertion passed, now register
	CredentialID string `json:"credentialId,omitempty"`
}

// FinishEnrollment completes one step. A refused step is recorded as
// approval.rejected; a registered key as approver.enrolled with its COSE
// public key.
func (s *Service) FinishEnrollment(ctx context.Context, token, ceremonyID string, response []byte) (*EnrollmentResult, error) {
	res, err := s.finishEnrollment(ctx, token, ceremonyID, response)
	if err != nil {
		var ce *CheckError
		if errors.As(err, &ce) {
			// Fixed words and the link's approver (from our table, not
			// the visitor); no approver member: no key was verified.
			reason := "enrollment: " + rejectedReason(err, "")
			if en, eerr := s.enrollment(ctx, token); eerr == nil {
				reason += "; link of " + en.approverID
			}
			e := audit.Entry{Kind: vocab.KindApprovalRejected, Reason: reason, RPID: s.opts.RPID}
			if rerr := s.record(ctx, e); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
		return nil, err
	}
	s.notify()
	return res, nil
}

// finishEnrollment finishes an enrollment link's ceremony: an assertion
// by one of the approver's keys vouching for the link ("enroll-get"), or
// the new key's registration ("enroll-create").
func (s *Service) finishEnrollment(ctx context.Context, token, ceremonyID string, response []byte) (*EnrollmentResult, error) {
	e, err := s.enrollment(ctx, token)
	if err != nil {
		return nil, err
	}
	var kind string
	if !validID(ceremonyID) {
		return nil, failf(ErrCeremony, "malformed ceremony id")
	}
	if err := s.db.QueryRowContext(ctx, `SELECT kind FROM approval_ceremonies WHERE id = ?`, ceremonyID).Scan(&kind); err != nil {
		return nil, failf(ErrCeremony, "no ceremony %s", ceremonyID)
	}
	_, session, err := s.takeCeremony(ctx, ceremonyID, kind, "", e.hash)
	if err != nil {
		return nil, err
	}
	h, err := s.handle(ctx, e.approverID)
	if err != nil {
		return nil, err
	}
	existing, err := s.activeCredentials(ctx, []string{e.approverID})
	if err != nil {
		return nil, err
	}
	user := approverUser{id: e.approverID, name: s.approverName(e.approverID), handle: h}
	for _, c := range existing {
		user.creds = append(user.creds, c.cred)
	}
	switch kind {
	case "enroll-get":
		return s.vouchForLink(ctx, e, existing, user, session, response)
	case "enroll-create":
		return s.registerKey(ctx, e, existing, user, session, response)
	}
	return nil, failf(ErrCeremony, "ceremony %s is not an enrollment", ceremonyID)
}

// vouchForLink verifies an assertion by one of the approver's active keys
// and marks the link verified by it, so that the link may add a further
// key. The enrollment is not done yet.
func (s *Service) vouchForLink(ctx context.Context, e *enrollment, existing []*storedCred, user approverUser, session webauthn.SessionData, response []byte) (*EnrollmentResult, error) {
	p, err := parseAssertion(response)
	if err != nil {
		return nil, err
	}
	var found *storedCred
	for _, c := range existing {
		if string(c.id) == string(p.RawID) {
			found = c
		}
	}
	if found == nil {
		return nil, failf(ErrUnknownCredential, "credential %s is not an active key of %s", b64(p.RawID), e.approverID)
	}
	updated, err := s.wa.ValidateLogin(user, session, p)
	if err != nil {
		return nil, failf(ErrSignature, "%s", protoDetail(err))
	}
	c := p.Response.AuthenticatorData.Counter
	if (c != 0 || found.signCount != 0) && c <= found.signCount {
		return nil, failf(ErrCounter, "sign counter %d is not above the stored %d", c, found.signCount)
	}
	credJSON, _ := json.Marshal(updated)
	if _, err := s.db.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ? WHERE id = ?`,
		c, credJSON, s.now().UnixNano(), found.id); err != nil {
		return nil, err
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE approval_enrollments SET verified_at = ?, verified_by = ? WHERE token_hash = ? AND used_at = 0`, s.now().UnixNano(), found.id, e.hash); err != nil {
		return nil, err
	}
	return &EnrollmentResult{Done: false}, nil
}

// registerKey verifies the new key's registration (and its attestation,
// when roots are configured), then uses up the link, stores the key and
// records approver.enrolled in one transaction.
func (s *Service) registerKey(ctx context.Context, e *enrollment, existing []*storedCred, user approverUser, session webauthn.SessionData, response []byte) (*EnrollmentResult, error) {
	if len(existing) > 0 && !e.verified {
		return nil, failf(ErrCeremony, "%s already has a key: one of them must vouch for the new one first", e.approverID)
	}
	if !json.Valid(response) {
		return nil, failf(ErrMalformed, "not JSON")
	}
	p, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return nil, failf(ErrMalformed, "%s", protoDetail(err))
	}
	cred, err := s.wa.CreateCredential(user, session, p)
	if err != nil {
		return nil, failf(ErrSignature, "%s", protoDetail(err))
	}
	rawAtt, rawCD := []byte(p.Raw.AttestationResponse.AttestationObject), []byte(p.Raw.AttestationResponse.ClientDataJSON)
	if s.opts.AttestationRoots != nil {
		if _, err := attest.Check(rawAtt, rawCD, s.opts.AttestationRoots, s.now()); err != nil {
			// The detail names the key's certificate, which the
			// visitor chose: the log, not the refusal, gets it.
			s.opts.Logger.Warn("approval: enrollment refused: attestation", "approver", e.approverID, "err", err)
			return nil, failf(ErrSignature, "the key's attestation is missing, invalid, or from a maker the configured roots do not vouch for")
		}
	}
	credJSON, err := json.Marshal(cred)
	if err != nil {
		return nil, err
	}
	credID := base64.RawURLEncoding.EncodeToString(cred.ID)
	vouch := ""
	if len(e.vouchedBy) > 0 {
		vouch = "; vouched for by key " + b64(e.vouchedBy)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE approval_enrollments SET used_at = ? WHERE token_hash = ? AND used_at = 0 AND expires_at > ?`,
			s.now().UnixNano(), e.hash, s.now().UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrEnrollment
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_credentials (id, approver_id, credential, sign_count, created_at) VALUES (?,?,?,?,?)`,
			cred.ID, e.approverID, credJSON, cred.Authenticator.SignCount, s.now().UnixNano()); err != nil {
			return failf(ErrCeremony, "credential %s is already enrolled", credID)
		}
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind:         vocab.KindApproverEnrolled,
			Approver:     e.approverID,
			CredentialID: credID,
			PublicKey:    b64(cred.PublicKey),
			// What the key attested, so an auditor holding the roots
			// can check it offline (audit verify --attestation-roots).
			AttestationObject: b64(rawAtt),
			ClientDataJSON:    b64(rawCD),
			Origin:            p.Response.CollectedClientData.Origin,
			RPID:              s.opts.RPID,
			UserVerified:      p.Response.AttestationObject.AuthData.Flags.HasUserVerified(),
			Reason:            fmt.Sprintf("key %d of %s; attestation %s%s", len(existing)+1, e.approverID, cmp.Or(cred.AttestationFormat, "none"), vouch),
		})
	})
	if err != nil {
		return nil, err
	}
	if err := s.flush(ctx, false); err != nil {
		return nil, err
	}
	return &EnrollmentResult{Done: true, CredentialID: credID}, nil
}

// conveyance is the attestation asked of keys at enrollment.
func (s *Service) conveyance() protocol.ConveyancePreference {
	if s.opts.Attestation == "direct" || s.opts.AttestationRoots != nil {
		return protocol.PreferDirectAttestation
	}
	return protocol.PreferNoAttestation
}

// enrollURL is the one-time link of an enrollment token on the public URL.
func (s *Service) enrollURL(token string) string { return s.opts.PublicURL + "/enroll/" + token }
