package approval

import (
	"context"
	"encoding/json"

	"github.com/countersign/countersign/approval/ceremony"
)

// The approvers' keys and the sign-in ceremony are package ceremony's;
// what changes a key is recorded here, in the change's transaction.

// Credentials lists every enrolled key, revoked ones included.
func (s *Service) Credentials(ctx context.Context) ([]ceremony.Credential, error) {
	return s.keys.Credentials(ctx)
}

// BeginSignIn starts a sign-in ceremony (page.Options.RequireSignIn): its
// options for the browser.
func (s *Service) BeginSignIn(ctx context.Context) (*ceremony.SignInOptions, error) {
	return s.keys.BeginSignIn(ctx)
}

// FinishSignIn verifies the assertion of a sign-in ceremony against the
// enrolled key it names and returns that key's approver.
func (s *Service) FinishSignIn(ctx context.Context, ceremony string, credential json.RawMessage) (string, error) {
	return s.keys.FinishSignIn(ctx, ceremony, credential)
}
