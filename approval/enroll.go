package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// Enrollment links and their ceremonies are package ceremony's; this file
// records them.

// EnrollmentOptions is the next WebAuthn step of an enrollment: "get" (an
// existing key vouches for the new one) or "create" (register the new key).
type EnrollmentOptions = ceremony.EnrollmentOptions

// EnrollmentResult says what FinishEnrollment did.
type EnrollmentResult = ceremony.EnrollmentResult

// CreateEnrollment issues a one-time enrollment link for an approver:
// single use, valid for EnrollTTL, bound to that approver. Recorded as
// enrollment.created.
func (s *Service) CreateEnrollment(ctx context.Context, approverID string) (string, error) {
	if _, ok := s.approvers[approverID]; !ok {
		return "", fmt.Errorf("%w %q (not in config)", ErrUnknownApprover, approverID)
	}
	var token string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		t, expires, err := s.keys.AddLink(ctx, tx, approverID)
		if err != nil {
			return err
		}
		token = t
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
		s.keys.SpoilLink(ctx, token)
		return "", err
	}
	return s.enrollURL(token), nil
}

// BeginEnrollment starts the next step of the enrollment behind token.
func (s *Service) BeginEnrollment(ctx context.Context, token string) (*EnrollmentOptions, error) {
	return s.keys.BeginEnrollment(ctx, token)
}

// FinishEnrollment completes one step. A refused step is recorded as
// approval.rejected; a registered key as approver.enrolled with its COSE
// public key.
func (s *Service) FinishEnrollment(ctx context.Context, token, ceremonyID string, response []byte) (*EnrollmentResult, error) {
	res, reg, err := s.keys.FinishEnrollment(ctx, token, ceremonyID, response)
	if err == nil && reg != nil {
		err = s.recordEnrolled(ctx, reg)
	}
	if err != nil {
		var ce *CheckError
		if errors.As(err, &ce) {
			// Fixed words and the link's approver (from our table, not
			// the visitor); no approver member: no key was verified.
			reason := "enrollment: " + ceremony.Reason(err, "")
			if approver, lerr := s.keys.LinkApprover(ctx, token); lerr == nil {
				reason += "; link of " + approver
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

// recordEnrolled uses up the link, stores the key and records
// approver.enrolled in one transaction.
func (s *Service) recordEnrolled(ctx context.Context, reg *ceremony.Registration) error {
	vouch := ""
	if reg.VouchedBy != "" {
		vouch = "; vouched for by key " + reg.VouchedBy
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.keys.StoreKey(ctx, tx, reg); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind:         vocab.KindApproverEnrolled,
			Approver:     reg.Approver,
			CredentialID: reg.CredentialID,
			PublicKey:    reg.PublicKey,
			// What the key attested, so an auditor holding the roots
			// can check it offline (audit verify --attestation-roots).
			AttestationObject: reg.AttestationObject,
			ClientDataJSON:    reg.ClientDataJSON,
			Origin:            reg.Origin,
			RPID:              s.opts.RPID,
			UserVerified:      reg.UserVerified,
			Reason:            fmt.Sprintf("key %d of %s; attestation %s%s", reg.Number, reg.Approver, reg.Format, vouch),
		})
	})
	if err != nil {
		return err
	}
	return s.flush(ctx, false)
}

// enrollURL is the one-time link of an enrollment token on the public URL.
func (s *Service) enrollURL(token string) string { return s.opts.PublicURL + "/enroll/" + token }
