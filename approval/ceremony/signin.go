package ceremony

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
func (rp *RP) BeginSignIn(ctx context.Context) (*SignInOptions, error) {
	a, session, err := rp.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return nil, err
	}
	id, err := rp.store(ctx, "signin", "", nil, "", session, rp.now().Add(TTL))
	if err != nil {
		return nil, err
	}
	return &SignInOptions{Ceremony: id, PublicKey: a.Response}, nil
}

// FinishSignIn verifies the assertion of a sign-in ceremony against the
// enrolled key it names and returns that key's approver.
func (rp *RP) FinishSignIn(ctx context.Context, ceremony string, credential json.RawMessage) (string, error) {
	_, session, err := rp.take(ctx, ceremony, "signin", "", nil)
	if err != nil {
		return "", err
	}
	p, err := ParseAssertion(credential)
	if err != nil {
		return "", err
	}
	cred, err := rp.Lookup(ctx, rp.db, p.RawID)
	if err != nil {
		return "", err
	}
	if cred == nil {
		return "", Failf(ErrUnknownCredential, "not an enrolled key")
	}
	if cred.Revoked {
		return "", Failf(ErrRevokedCredential, "the key was revoked")
	}
	if c := p.Response.AuthenticatorData.Counter; (c != 0 || cred.SignCount != 0) && c <= cred.SignCount {
		return "", Failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", c, cred.SignCount)
	}
	h, err := rp.handle(ctx, cred.Approver)
	if err != nil {
		return "", err
	}
	session.UserID = h
	session.AllowedCredentialIDs = [][]byte{p.RawID}
	user := approverUser{id: cred.Approver, name: rp.approverName(cred.Approver), handle: h, creds: []webauthn.Credential{cred.Cred}}
	updated, err := rp.wa.ValidateLogin(user, session, p)
	if err != nil {
		return "", Failf(ErrSignature, "%s", protoDetail(err))
	}
	if updated.Authenticator.CloneWarning {
		return "", Failf(ErrCounter, "possible cloned key")
	}
	if err := rp.use(ctx, rp.db, cred, updated, p.Response.AuthenticatorData.Counter); err != nil {
		return "", err
	}
	if _, ok := rp.approver(cred.Approver); !ok {
		return "", errors.Join(ErrUnknownApprover, Failf(ErrApproverNotAllowed, "the key's approver is no longer in the config"))
	}
	return cred.Approver, nil
}
