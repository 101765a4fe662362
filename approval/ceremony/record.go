package ceremony

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/vocab"
)

// Outbox is where the audit entries of enrollment and revocation go:
// approval's outbox, which writes an entry in the transaction of the
// change it describes and then appends it to the log.
type Outbox interface {
	InTx(ctx context.Context, fn func(tx *sql.Tx) error) error
	Enqueue(ctx context.Context, tx *sql.Tx, e audit.Entry) error
	Flush(ctx context.Context) error
	// Record appends an entry that changes no state (a refused step).
	Record(ctx context.Context, e audit.Entry) error
}

// CreateEnrollment issues a one-time enrollment link for an approver and
// returns its token: single use, valid for Config.EnrollTTL, bound to that
// approver. Recorded as enrollment.created; a link whose entry could not
// be appended is used up at once.
//
// A link for a person of the identity provider (Config.People: the page
// makes one when they ask, signed in there) is bound to them as the
// provider last described them, so that the key they register is
// recorded with who they are there: enrollment.created and
// approver.enrolled carry their issuer, subject, email and auth time.
func (rp *RP) CreateEnrollment(ctx context.Context, out Outbox, approverID string) (string, error) {
	if _, ok := rp.cfg.Approver(approverID); ok {
		return rp.createEnrollment(ctx, out, approverID, nil, "one-time enrollment link issued")
	}
	k, ok := rp.cfg.People.Lookup(approverID)
	if !ok {
		return "", fmt.Errorf("%w %q (not in config)", ErrUnknownApprover, approverID)
	}
	return rp.createEnrollment(ctx, out, approverID, &k.Person, "enrollment link of a person of the identity provider")
}

func (rp *RP) createEnrollment(ctx context.Context, out Outbox, approverID string, person *identity.Person, reason string) (string, error) {
	var token string
	// Each run makes a new link; token is the committed run's.
	err := out.InTx(ctx, func(tx *sql.Tx) error {
		t, expires, err := rp.AddLink(ctx, tx, approverID, person)
		if err != nil {
			return err
		}
		token = t
		e := audit.Entry{
			Kind:      vocab.KindEnrollmentCreated,
			Approver:  approverID,
			ExpiresAt: expires.UTC().Format(time.RFC3339),
			Reason:    reason,
		}
		withPerson(&e, person, false)
		return out.Enqueue(ctx, tx, e)
	})
	if err != nil {
		return "", fmt.Errorf("approval: create enrollment: %w", err)
	}
	if err := out.Flush(ctx); err != nil {
		rp.SpoilLink(ctx, token)
		return "", err
	}
	return token, nil
}

// Enroll completes one step of the enrollment behind token (see
// FinishEnrollment). A refused step is recorded as approval.rejected; a
// registered key is stored and recorded as approver.enrolled with its
// COSE public key, in one transaction.
func (rp *RP) Enroll(ctx context.Context, out Outbox, token, ceremonyID string, response []byte) (*EnrollmentResult, error) {
	res, reg, err := rp.FinishEnrollment(ctx, token, ceremonyID, response)
	if err == nil && reg != nil {
		err = rp.recordEnrolled(ctx, out, reg)
	}
	var ce *CheckError
	if err != nil && errors.As(err, &ce) {
		// Fixed words and the link's approver (from our table, not the
		// visitor); no approver member: no key was verified.
		reason := "enrollment: " + Reason(err, "")
		if approver, lerr := rp.LinkApprover(ctx, token); lerr == nil {
			reason += "; link of " + approver
		}
		e := audit.Entry{Kind: vocab.KindApprovalRejected, Reason: reason, RPID: rp.cfg.RPID}
		if rerr := out.Record(ctx, e); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// recordEnrolled uses up the link, stores the key and records
// approver.enrolled in one transaction.
func (rp *RP) recordEnrolled(ctx context.Context, out Outbox, reg *Registration) error {
	vouch := ""
	if reg.VouchedBy != "" {
		vouch = "; vouched for by key " + reg.VouchedBy
	}
	err := out.InTx(ctx, func(tx *sql.Tx) error {
		if err := rp.StoreKey(ctx, tx, reg); err != nil {
			return err
		}
		e := audit.Entry{
			Kind:         vocab.KindApproverEnrolled,
			Approver:     reg.Approver,
			CredentialID: reg.CredentialID,
			PublicKey:    reg.PublicKey,
			// What the key attested, so an auditor holding the roots
			// can check it offline (audit verify --attestation-roots).
			AttestationObject: reg.AttestationObject,
			ClientDataJSON:    reg.ClientDataJSON,
			Origin:            reg.Origin,
			RPID:              rp.cfg.RPID,
			UserVerified:      reg.UserVerified,
			Reason:            fmt.Sprintf("key %d of %s; attestation %s%s", reg.Number, reg.Approver, reg.Format, vouch),
		}
		withPerson(&e, reg.Person, false)
		return out.Enqueue(ctx, tx, e)
	})
	if err != nil {
		return err
	}
	return out.Flush(ctx)
}

// withPerson records on e who the identity provider said the person is:
// issuer, subject, email and auth time, and with groups (a decision) the
// groups it listed then. Nothing for nil (an approver from mcp.yaml).
func withPerson(e *audit.Entry, p *identity.Person, groups bool) {
	if p == nil {
		return
	}
	e.IdPIssuer, e.IdPSubject, e.IdPEmail = p.Issuer, p.Subject, p.Email
	e.IdPAuthTime = p.AuthTime.UTC().Format(time.RFC3339)
	if groups {
		e.IdPGroups = append([]string{}, p.Groups...)
	}
}

// RevokeAndRecord revokes a key (by its base64url id) and records
// credential.revoked in the same transaction; it can no longer approve,
// deny or vouch for a new key.
func (rp *RP) RevokeAndRecord(ctx context.Context, out Outbox, credentialID, reason string) error {
	if reason == "" {
		reason = "revoked by admin"
	}
	err := out.InTx(ctx, func(tx *sql.Tx) error {
		k, err := rp.Revoke(ctx, tx, credentialID, reason)
		if err != nil {
			return err
		}
		return out.Enqueue(ctx, tx, audit.Entry{
			Kind:         vocab.KindCredentialRevoked,
			Approver:     k.Approver,
			CredentialID: credentialID,
			PublicKey:    B64(k.Cred.PublicKey),
			Reason:       reason,
		})
	})
	if err != nil {
		return err
	}
	return out.Flush(ctx)
}
