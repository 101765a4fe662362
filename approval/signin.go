package approval

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

// The sign-in ceremony: a visitor of a page that needs sign-in
// (page.Options.RequireSignIn) proves with a WebAuthn assertion from an
// enrolled, unrevoked key that they are an approver. The assertion is over
// a random challenge and discoverable: the options name no credential, so
// they leak no ids. What the proof earns (a session) is the page's
// (approval/page).

// SignInOptions is what the sign-in page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON.
type SignInOptions struct {
	Ceremony  string                                     `json:"ceremony"`
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
}

// BeginSignIn starts a sign-in ceremony: its options for the browser.
func (s *Service) BeginSignIn(ctx context.Context) (*SignInOptions, error) {
	a, session, err := s.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return nil, err
	}
	id, err := s.storeCeremony(ctx, "signin", "", nil, "", session, s.now().Add(ceremonyTTL))
	if err != nil {
		return nil, err
	}
	return &SignInOptions{Ceremony: id, PublicKey: a.Response}, nil
}

// FinishSignIn verifies the assertion of a sign-in ceremony against the
// enrolled key it names and returns that key's approver.
func (s *Service) FinishSignIn(ctx context.Context, ceremony string, credential json.RawMessage) (string, error) {
	_, session, err := s.takeCeremony(ctx, ceremony, "signin", "", nil)
	if err != nil {
		return "", err
	}
	p, err := parseAssertion(credential)
	if err != nil {
		return "", err
	}
	cred, err := s.credential(ctx, s.db, p.RawID)
	if err != nil {
		return "", err
	}
	if cred == nil {
		return "", failf(ErrUnknownCredential, "not an enrolled key")
	}
	if cred.revoked {
		return "", failf(ErrRevokedCredential, "the key was revoked")
	}
	if c := p.Response.AuthenticatorData.Counter; (c != 0 || cred.signCount != 0) && c <= cred.signCount {
		return "", failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", c, cred.signCount)
	}
	h, err := s.handle(ctx, cred.approverID)
	if err != nil {
		return "", err
	}
	session.UserID = h
	session.AllowedCredentialIDs = [][]byte{p.RawID}
	user := approverUser{id: cred.approverID, name: s.approverName(cred.approverID), handle: h, creds: []webauthn.Credential{cred.cred}}
	updated, err := s.wa.ValidateLogin(user, session, p)
	if err != nil {
		return "", failf(ErrSignature, "%s", protoDetail(err))
	}
	if updated.Authenticator.CloneWarning {
		return "", failf(ErrCounter, "possible cloned key")
	}
	credJSON, err := json.Marshal(updated)
	if err != nil {
		return "", err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ?
		WHERE id = ? AND revoked_at = 0 AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		p.Response.AuthenticatorData.Counter, credJSON, s.now().UnixNano(), cred.id, p.Response.AuthenticatorData.Counter, p.Response.AuthenticatorData.Counter)
	if err != nil {
		return "", err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return "", failf(ErrCounter, "sign counter did not increase (or the key was revoked meanwhile)")
	}
	if _, ok := s.approvers[cred.approverID]; !ok {
		return "", errors.Join(ErrUnknownApprover, failf(ErrApproverNotAllowed, "the key's approver is no longer in the config"))
	}
	return cred.approverID, nil
}
