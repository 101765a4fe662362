package approval

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// The approvers' keys and the sign-in ceremony are package ceremony's;
// what changes a key is recorded here, in the change's transaction.

// Credential is one enrolled security key.
type Credential = ceremony.Credential

// SignInOptions is what the sign-in page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON.
type SignInOptions = ceremony.SignInOptions

// ErrUnknownCredentialID is returned by RevokeCredential for an id that is
// not enrolled.
var ErrUnknownCredentialID = ceremony.ErrUnknownCredentialID

func b64(b []byte) string { return ceremony.B64(b) }

// Credentials lists every enrolled key, revoked ones included.
func (s *Service) Credentials(ctx context.Context) ([]Credential, error) {
	return s.keys.Credentials(ctx)
}

// RevokeCredential revokes a key (by its base64url id); it can no longer
// approve, deny or vouch for a new key. Recorded as credential.revoked.
func (s *Service) RevokeCredential(ctx context.Context, credentialID, reason string) error {
	if reason == "" {
		reason = "revoked by admin"
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		k, err := s.keys.Revoke(ctx, tx, credentialID, reason)
		if err != nil {
			return err
		}
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind:         vocab.KindCredentialRevoked,
			Approver:     k.Approver,
			CredentialID: credentialID,
			PublicKey:    b64(k.Cred.PublicKey),
			Reason:       reason,
		})
	})
	if err != nil {
		return err
	}
	err = s.flush(ctx, false)
	s.notify()
	return err
}

// BeginSignIn starts a sign-in ceremony (Options.RequireSignIn): its
// options for the browser.
func (s *Service) BeginSignIn(ctx context.Context) (*SignInOptions, error) {
	return s.keys.BeginSignIn(ctx)
}

// FinishSignIn verifies the assertion of a sign-in ceremony against the
// enrolled key it names and returns that key's approver.
func (s *Service) FinishSignIn(ctx context.Context, ceremony string, credential json.RawMessage) (string, error) {
	return s.keys.FinishSignIn(ctx, ceremony, credential)
}
