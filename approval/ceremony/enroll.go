package ceremony

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

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"
)

// Errors of enrollment links and sign-in.
var (
	ErrEnrollment      = errors.New("approval: enrollment link is invalid, used or expired")
	ErrUnknownApprover = errors.New("approval: unknown approver")
)

// AddLink stores a new one-time enrollment link for approverID inside tx:
// single use, valid for Config.EnrollTTL, bound to that approver, and
// with person, to the person the identity provider signed in (a link they
// made themselves: the key they register is recorded with who they are
// there). It returns the link's token and when it expires.
func (rp *RP) AddLink(ctx context.Context, tx *sql.Tx, approverID string, person *identity.Person) (string, time.Time, error) {
	var who string
	if person != nil {
		b, err := json.Marshal(person)
		if err != nil {
			return "", time.Time{}, err
		}
		who = string(b)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return "", time.Time{}, err
	}
	token := B64(tok)
	hash := sha256.Sum256([]byte(token))
	now := rp.now()
	expires := now.Add(rp.cfg.EnrollTTL)
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_enrollments (token_hash, approver_id, created_at, expires_at, identity) VALUES (?,?,?,?,?)`,
		hash[:], approverID, now.UnixNano(), expires.UnixNano(), who)
	return token, expires, err
}

// SpoilLink uses up a link nobody was given (its creation could not be
// recorded).
func (rp *RP) SpoilLink(ctx context.Context, token string) {
	hash := sha256.Sum256([]byte(token))
	rp.db.ExecContext(context.WithoutCancel(ctx), `UPDATE approval_enrollments SET used_at = ? WHERE token_hash = ?`, rp.now().UnixNano(), hash[:])
}

// LinkApprover is the approver an unused, unexpired link is for;
// ErrEnrollment when there is none.
func (rp *RP) LinkApprover(ctx context.Context, token string) (string, error) {
	e, err := rp.enrollment(ctx, token)
	if err != nil {
		return "", err
	}
	return e.approverID, nil
}

// ValidToken reports whether s is an enrollment token as AddLink issues
// them: 32 random bytes, base64url without padding.
func ValidToken(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32 && B64(b) == s
}

// enrollment is a usable enrollment link.
type enrollment struct {
	hash       []byte
	approverID string
	verified   bool
	vouchedBy  []byte // the existing key whose assertion allowed a further key
	expires    time.Time
	person     *identity.Person // who made the link at the identity provider; nil: an admin's link
}

func (rp *RP) enrollment(ctx context.Context, token string) (*enrollment, error) {
	if !ValidToken(token) {
		return nil, ErrEnrollment
	}
	hash := sha256.Sum256([]byte(token))
	var (
		e                         enrollment
		expires, verified, usedAt int64
		who                       string
	)
	err := rp.db.QueryRowContext(ctx, `SELECT approver_id, expires_at, verified_at, verified_by, used_at, identity FROM approval_enrollments WHERE token_hash = ?`, hash[:]).
		Scan(&e.approverID, &expires, &verified, &e.vouchedBy, &usedAt, &who)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrEnrollment
	}
	if err != nil {
		return nil, err
	}
	if who != "" {
		e.person = new(identity.Person)
		if err := json.Unmarshal([]byte(who), e.person); err != nil {
			return nil, fmt.Errorf("approval: enrollment link's identity: %w", err)
		}
	}
	e.hash = hash[:]
	e.verified = verified != 0
	e.expires = time.Unix(0, expires)
	if usedAt != 0 || !rp.now().Before(e.expires) {
		return nil, ErrEnrollment
	}
	if _, ok := rp.approver(e.approverID); !ok {
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
func (rp *RP) BeginEnrollment(ctx context.Context, token string) (*EnrollmentOptions, error) {
	e, err := rp.enrollment(ctx, token)
	if err != nil {
		return nil, err
	}
	existing, user, err := rp.keysOf(ctx, e.approverID)
	if err != nil {
		return nil, err
	}
	out := &EnrollmentOptions{ApproverID: e.approverID, ApproverName: user.name}
	var (
		session *webauthn.SessionData
		options any
	)
	if len(existing) > 0 && !e.verified {
		out.Step = "get"
		a, sess, err := rp.wa.BeginLogin(user, webauthn.WithUserVerification(protocol.VerificationPreferred))
		if err != nil {
			return nil, fmt.Errorf("approval: begin enrollment assertion: %w", err)
		}
		session, options = sess, a.Response
	} else {
		out.Step = "create"
		c, sess, err := rp.wa.BeginRegistration(user,
			webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
				ResidentKey:      protocol.ResidentKeyRequirementPreferred,
				UserVerification: protocol.VerificationPreferred,
			}),
			webauthn.WithConveyancePreference(rp.conveyance()),
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
	expires := rp.now().Add(TTL)
	if e.expires.Before(expires) {
		expires = e.expires
	}
	if out.Ceremony, err = rp.store(ctx, "enroll-"+out.Step, "", e.hash, "", session, expires); err != nil {
		return nil, err
	}
	return out, nil
}

// EnrollmentResult says what FinishEnrollment did.
type EnrollmentResult struct {
	Done         bool   `json:"done"` // false: the vouching assertion passed, now register
	CredentialID string `json:"credentialId,omitempty"`
}

// Registration is a new key that passed every check, not stored yet:
// StoreKey stores it, in the transaction that records it.
type Registration struct {
	Approver     string
	CredentialID string // base64url
	PublicKey    string // base64url COSE_Key
	// What the key attested, base64url, so an auditor holding the roots
	// can check it offline.
	AttestationObject, ClientDataJSON string
	Format                            string // attestation format, "none" without one
	Origin                            string
	UserVerified                      bool
	Number                            int    // the approver's how-manieth key
	VouchedBy                         string // base64url id of the key that vouched for it, if any
	// Person is who made the link at the identity provider (a
	// self-service link); nil for an admin's link.
	Person *identity.Person

	link []byte
	cred *webauthn.Credential
	json []byte
}

// FinishEnrollment finishes an enrollment link's ceremony: an assertion
// by one of the approver's keys vouching for the link ("enroll-get"), or
// the new key's registration ("enroll-create"), which it returns for the
// caller to store and record. A refused step is a *CheckError.
func (rp *RP) FinishEnrollment(ctx context.Context, token, ceremonyID string, response []byte) (*EnrollmentResult, *Registration, error) {
	e, err := rp.enrollment(ctx, token)
	if err != nil {
		return nil, nil, err
	}
	var kind string
	if !ValidID(ceremonyID) {
		return nil, nil, Failf(ErrCeremony, "malformed ceremony id")
	}
	if err := rp.db.QueryRowContext(ctx, `SELECT kind FROM approval_ceremonies WHERE id = ?`, ceremonyID).Scan(&kind); err != nil {
		return nil, nil, Failf(ErrCeremony, "no ceremony %s", ceremonyID)
	}
	_, session, err := rp.take(ctx, ceremonyID, kind, "", e.hash)
	if err != nil {
		return nil, nil, err
	}
	existing, user, err := rp.keysOf(ctx, e.approverID)
	if err != nil {
		return nil, nil, err
	}
	switch kind {
	case "enroll-get":
		res, err := rp.vouchForLink(ctx, e, existing, user, session, response)
		return res, nil, err
	case "enroll-create":
		reg, err := rp.register(e, existing, user, session, response)
		if err != nil {
			return nil, nil, err
		}
		return &EnrollmentResult{Done: true, CredentialID: reg.CredentialID}, reg, nil
	}
	return nil, nil, Failf(ErrCeremony, "ceremony %s is not an enrollment", ceremonyID)
}

// keysOf is an approver's active keys, and the approver as go-webauthn's
// user with them.
func (rp *RP) keysOf(ctx context.Context, approverID string) ([]*Key, approverUser, error) {
	user := approverUser{id: approverID, name: rp.approverName(approverID)}
	h, err := rp.handle(ctx, approverID)
	if err != nil {
		return nil, user, err
	}
	user.handle = h
	existing, err := rp.Active(ctx, []string{approverID})
	if err != nil {
		return nil, user, err
	}
	for _, c := range existing {
		user.creds = append(user.creds, c.Cred)
	}
	return existing, user, nil
}

// vouchForLink verifies an assertion by one of the approver's active keys
// and marks the link verified by it, so that the link may add a further
// key. The enrollment is not done yet.
func (rp *RP) vouchForLink(ctx context.Context, e *enrollment, existing []*Key, user approverUser, session webauthn.SessionData, response []byte) (*EnrollmentResult, error) {
	p, err := ParseAssertion(response)
	if err != nil {
		return nil, err
	}
	var found *Key
	for _, c := range existing {
		if string(c.ID) == string(p.RawID) {
			found = c
		}
	}
	if found == nil {
		return nil, Failf(ErrUnknownCredential, "credential %s is not an active key of %s", B64(p.RawID), e.approverID)
	}
	updated, err := rp.wa.ValidateLogin(user, session, p)
	if err != nil {
		return nil, Failf(ErrSignature, "%s", protoDetail(err))
	}
	c := p.Response.AuthenticatorData.Counter
	if (c != 0 || found.SignCount != 0) && c <= found.SignCount {
		return nil, Failf(ErrCounter, "sign counter %d is not above the stored %d", c, found.SignCount)
	}
	credJSON, _ := json.Marshal(updated)
	if _, err := rp.db.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ? WHERE id = ?`,
		c, credJSON, rp.now().UnixNano(), found.ID); err != nil {
		return nil, err
	}
	if _, err := rp.db.ExecContext(ctx, `UPDATE approval_enrollments SET verified_at = ?, verified_by = ? WHERE token_hash = ? AND used_at = 0`, rp.now().UnixNano(), found.ID, e.hash); err != nil {
		return nil, err
	}
	return &EnrollmentResult{Done: false}, nil
}

// register verifies the new key's registration (and its attestation,
// when roots are configured).
func (rp *RP) register(e *enrollment, existing []*Key, user approverUser, session webauthn.SessionData, response []byte) (*Registration, error) {
	if len(existing) > 0 && !e.verified {
		return nil, Failf(ErrCeremony, "%s already has a key: one of them must vouch for the new one first", e.approverID)
	}
	if !json.Valid(response) {
		return nil, Failf(ErrMalformed, "not JSON")
	}
	p, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return nil, Failf(ErrMalformed, "%s", protoDetail(err))
	}
	cred, err := rp.wa.CreateCredential(user, session, p)
	if err != nil {
		return nil, Failf(ErrSignature, "%s", protoDetail(err))
	}
	rawAtt, rawCD := []byte(p.Raw.AttestationResponse.AttestationObject), []byte(p.Raw.AttestationResponse.ClientDataJSON)
	if rp.cfg.AttestationRoots != nil {
		if _, err := attest.Check(rawAtt, rawCD, rp.cfg.AttestationRoots, rp.now()); err != nil {
			// The detail names the key's certificate, which the
			// visitor chose: the log, not the refusal, gets it.
			rp.cfg.Logger.Warn("approval: enrollment refused: attestation", "approver", e.approverID, "err", err)
			return nil, Failf(ErrSignature, "the key's attestation is missing, invalid, or from a maker the configured roots do not vouch for")
		}
	}
	credJSON, err := json.Marshal(cred)
	if err != nil {
		return nil, err
	}
	reg := &Registration{
		Approver:          e.approverID,
		CredentialID:      B64(cred.ID),
		PublicKey:         B64(cred.PublicKey),
		AttestationObject: B64(rawAtt),
		ClientDataJSON:    B64(rawCD),
		Format:            cmp.Or(cred.AttestationFormat, "none"),
		Origin:            p.Response.CollectedClientData.Origin,
		UserVerified:      p.Response.AttestationObject.AuthData.Flags.HasUserVerified(),
		Number:            len(existing) + 1,
		Person:            e.person,
		link:              e.hash,
		cred:              cred,
		json:              credJSON,
	}
	if len(e.vouchedBy) > 0 {
		reg.VouchedBy = B64(e.vouchedBy)
	}
	return reg, nil
}

// StoreKey uses up the registration's link and stores its key, inside tx.
func (rp *RP) StoreKey(ctx context.Context, tx *sql.Tx, reg *Registration) error {
	now := rp.now().UnixNano()
	res, err := tx.ExecContext(ctx, `UPDATE approval_enrollments SET used_at = ? WHERE token_hash = ? AND used_at = 0 AND expires_at > ?`,
		now, reg.link, now)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrEnrollment
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_credentials (id, approver_id, credential, sign_count, created_at) VALUES (?,?,?,?,?)`,
		reg.cred.ID, reg.Approver, reg.json, reg.cred.Authenticator.SignCount, now); err != nil {
		if store.Conflict(err) {
			return err // InTx runs it again
		}
		return Failf(ErrCeremony, "credential %s is already enrolled", reg.CredentialID)
	}
	return nil
}

// conveyance is the attestation asked of keys at enrollment.
func (rp *RP) conveyance() protocol.ConveyancePreference {
	if rp.cfg.Attestation == "direct" || rp.cfg.AttestationRoots != nil {
		return protocol.PreferDirectAttestation
	}
	return protocol.PreferNoAttestation
}
