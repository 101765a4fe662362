package approval

import (
	"context"

	"github.com/countersign/countersign/approval/ceremony"
)

// Enrollment links, their ceremonies and revocation are package
// ceremony's; it records them through this service's outbox.

// CreateEnrollment issues a one-time enrollment link for an approver:
// single use, valid for EnrollTTL, bound to that approver. Recorded as
// enrollment.created.
func (s *Service) CreateEnrollment(ctx context.Context, approverID string) (string, error) {
	token, err := s.keys.CreateEnrollment(ctx, outboxPort{s}, approverID)
	if err != nil {
		return "", err
	}
	return s.enrollURL(token), nil
}

// BeginEnrollment starts the next step of the enrollment behind token.
func (s *Service) BeginEnrollment(ctx context.Context, token string) (*ceremony.EnrollmentOptions, error) {
	return s.keys.BeginEnrollment(ctx, token)
}

// FinishEnrollment completes one step. A refused step is recorded as
// approval.rejected; a registered key as approver.enrolled with its COSE
// public key.
func (s *Service) FinishEnrollment(ctx context.Context, token, ceremonyID string, response []byte) (*ceremony.EnrollmentResult, error) {
	res, err := s.keys.Enroll(ctx, outboxPort{s}, token, ceremonyID, response)
	if err == nil {
		s.notify()
	}
	return res, err
}

// RevokeCredential revokes a key (by its base64url id); it can no longer
// approve, deny or vouch for a new key. Recorded as credential.revoked.
func (s *Service) RevokeCredential(ctx context.Context, credentialID, reason string) error {
	err := s.keys.RevokeAndRecord(ctx, outboxPort{s}, credentialID, reason)
	s.notify()
	return err
}

// enrollURL is the one-time link of an enrollment token on the public URL.
func (s *Service) enrollURL(token string) string { return s.opts.PublicURL + "/enroll/" + token }
