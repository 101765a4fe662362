package ceremony

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// Verified is an assertion that passed every check.
type Verified struct {
	Parsed   *protocol.ParsedCredentialAssertionData
	Key      *Key
	Updated  *webauthn.Credential
	ReplayID []byte
}

// Assertion is what one assertion must prove, beside what every
// assertion must (a configured origin, our RP ID, user presence, a fresh
// signature by an enrolled, unrevoked key that the ceremony offered).
type Assertion struct {
	Session webauthn.SessionData
	// Challenge is what the key must have signed, and how to name it in a
	// refusal.
	Challenge func() ([32]byte, string, error)
	// Allowed says whether the key's approver may sign, and the user
	// verification the assertion needs.
	Allowed func(approver string) (vocab.UserVerification, error)
	// Decision is what the assertion decides. An approval by a person of
	// the identity provider also needs the provider to vouch for them
	// still (Config.People); a denial never waits on the provider.
	Decision vocab.Decision
}

// ParseAssertion is the untrusted-input parser: the page's cred.toJSON().
func ParseAssertion(raw []byte) (*protocol.ParsedCredentialAssertionData, error) {
	if !json.Valid(raw) {
		return nil, Failf(ErrMalformed, "not JSON")
	}
	p, err := protocol.ParseCredentialRequestResponseBytes(raw)
	if err != nil {
		return nil, Failf(ErrMalformed, "%s", protoDetail(err))
	}
	if len(p.RawID) == 0 || len(p.Response.Signature) == 0 {
		return nil, Failf(ErrMalformed, "missing rawId or signature")
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

// Verify runs the checks of keys and ceremonies on one assertion, each
// with its own named error, asking a about the rest, then lets go-webauthn
// verify the signature and the rest. A refusal names the first check that
// failed.
func (rp *RP) Verify(ctx context.Context, a Assertion, p *protocol.ParsedCredentialAssertionData) (*Verified, error) {
	cd := p.Response.CollectedClientData
	if cd.Type != protocol.AssertCeremony {
		return nil, Failf(ErrCeremonyType, "clientData.type is %q", cd.Type)
	}
	want, what, err := signedChallenge(a, cd)
	if err != nil {
		return nil, err
	}
	replayID, err := rp.notReplayed(ctx, p)
	if err != nil {
		return nil, err
	}
	key, err := rp.enrolled(ctx, p.RawID)
	if err != nil {
		return nil, err
	}
	uv, err := a.Allowed(key.Approver)
	if err != nil {
		return nil, err
	}
	if err := rp.stillEligible(ctx, a.Decision, key.Approver); err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(a.Session.AllowedCredentialIDs, func(id []byte) bool { return bytes.Equal(id, p.RawID) }) {
		return nil, Failf(ErrCredentialNotOffered, "credential %s was not offered for this ceremony", B64(p.RawID))
	}
	if err := rp.checkAuthenticator(cd, p.Response.AuthenticatorData, key, uv, what); err != nil {
		return nil, err
	}
	updated, err := rp.checkSignature(ctx, a, p, key, uv, want)
	if err != nil {
		return nil, err
	}
	return &Verified{Parsed: p, Key: key, Updated: updated, ReplayID: replayID}, nil
}

// Spend spends a verified assertion inside tx, for subject (the request
// it decided, or the first of a batch): it can never be used again, and
// its key's sign counter moves up to it.
func (rp *RP) Spend(ctx context.Context, tx *sql.Tx, subject string, v *Verified) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_used_assertions (hash, request_id, created_at) VALUES (?,?,?)`, v.ReplayID, subject, rp.now().UnixNano()); err != nil {
		if store.Conflict(err) {
			return err // a concurrent spend committed first: InTx runs again
		}
		return Failf(ErrReplay, "this assertion was already used")
	}
	return rp.use(ctx, tx, v.Key, v.Updated, v.Parsed.Response.AuthenticatorData.Counter)
}

// signedChallenge checks that the client data and the ceremony both carry
// the challenge a needs signed, and returns it and how to name it.
func signedChallenge(a Assertion, cd protocol.CollectedClientData) ([32]byte, string, error) {
	want, what, err := a.Challenge()
	if err != nil {
		return want, what, err
	}
	if cd.Challenge != B64(want[:]) || a.Session.Challenge != B64(want[:]) {
		return want, what, Failf(ErrChallenge, "the key signed a different action than %s", what)
	}
	return want, what, nil
}

// notReplayed returns the assertion's replay id, refusing one already used.
func (rp *RP) notReplayed(ctx context.Context, p *protocol.ParsedCredentialAssertionData) ([]byte, error) {
	replayID := sha256.Sum256(append(append([]byte{}, p.RawID...), p.Response.Signature...))
	var n int
	if err := rp.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_used_assertions WHERE hash = ?`, replayID[:]).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, Failf(ErrReplay, "this assertion was already used")
	}
	return replayID[:], nil
}

// enrolled is the enrolled, unrevoked key that made the assertion.
func (rp *RP) enrolled(ctx context.Context, rawID []byte) (*Key, error) {
	cred, err := rp.Lookup(ctx, rp.db, rawID)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, Failf(ErrUnknownCredential, "credential %s is not enrolled", B64(rawID))
	}
	if cred.Revoked {
		return nil, Failf(ErrRevokedCredential, "credential %s was revoked", B64(rawID))
	}
	return cred, nil
}

// checkAuthenticator checks where the assertion was made and what the key
// reports: a configured origin, our RP ID, user presence, user
// verification when uv requires it, and a sign counter that moved up.
func (rp *RP) checkAuthenticator(cd protocol.CollectedClientData, ad protocol.AuthenticatorData, cred *Key, uv vocab.UserVerification, what string) error {
	if !slices.Contains(rp.cfg.Origins, cd.Origin) || cd.CrossOrigin {
		return Failf(ErrOrigin, "origin %q (cross-origin %v) is not one of %v", cd.Origin, cd.CrossOrigin, rp.cfg.Origins)
	}
	rpHash := sha256.Sum256([]byte(rp.cfg.RPID))
	if !bytes.Equal(ad.RPIDHash, rpHash[:]) {
		return Failf(ErrRPID, "authenticator data is not for RP ID %q", rp.cfg.RPID)
	}
	if !ad.Flags.HasUserPresent() {
		return Failf(ErrUserPresence, "the key did not report user presence")
	}
	if uv == vocab.UVRequired && !ad.Flags.HasUserVerified() {
		return Failf(ErrUserVerification, "%s requires user verification (PIN or biometric)", what)
	}
	if ad.Counter != 0 || cred.SignCount != 0 {
		if ad.Counter <= cred.SignCount {
			return Failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", ad.Counter, cred.SignCount)
		}
	}
	return nil
}

// checkSignature lets go-webauthn verify the signature (and the rest) for
// the one key, the challenge want and the user verification uv.
func (rp *RP) checkSignature(ctx context.Context, a Assertion, p *protocol.ParsedCredentialAssertionData, cred *Key, uv vocab.UserVerification, want [32]byte) (*webauthn.Credential, error) {
	h, err := rp.handle(ctx, cred.Approver)
	if err != nil {
		return nil, err
	}
	sess := a.Session
	sess.UserID = h
	sess.AllowedCredentialIDs = [][]byte{p.RawID}
	sess.Challenge = B64(want[:])
	sess.UserVerification = uvRequirement(uv)
	user := approverUser{id: cred.Approver, name: rp.approverName(cred.Approver), handle: h, creds: []webauthn.Credential{cred.Cred}}
	updated, err := rp.wa.ValidateLogin(user, sess, p)
	if err != nil {
		return nil, Failf(ErrSignature, "%s", protoDetail(err))
	}
	if updated.Authenticator.CloneWarning {
		return nil, Failf(ErrCounter, "go-webauthn flagged a possible clone")
	}
	return updated, nil
}

// stillEligible asks, for an approval by a person of the identity
// provider, whether the provider still vouches for them (People.Eligible:
// what it said within identity.recheck, else asked again). A person it no
// longer puts in a mapped group is refused, and so is everyone from it
// while it cannot be asked: approvals fail closed. Denials are not asked
// about.
func (rp *RP) stillEligible(ctx context.Context, decision vocab.Decision, approver string) error {
	if decision == vocab.Deny || rp.cfg.People == nil {
		return nil
	}
	err := rp.cfg.People.Eligible(ctx, approver)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, identity.ErrUnreachable):
		return Failf(ErrProviderUnreachable, "%v", err)
	case errors.Is(err, identity.ErrNotEligible):
		return Failf(ErrNotEligible, "%v", err)
	}
	return err
}
