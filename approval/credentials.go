package approval

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// Credential is one enrolled security key.
type Credential struct {
	ID           string // base64url credential id
	ApproverID   string
	ApproverName string
	PublicKey    string // base64url COSE_Key
	AAGUID       string
	SignCount    uint32
	CreatedAt    time.Time
	LastUsedAt   time.Time // zero if never used
	Revoked      bool
	RevokedAt    time.Time
	RevokeReason string
}

// storedCred is a credential row with the library's record.
type storedCred struct {
	id         []byte
	approverID string
	cred       webauthn.Credential
	signCount  uint32
	revoked    bool
}

// approverUser adapts one approver to webauthn.User.
type approverUser struct {
	id, name string
	handle   []byte
	creds    []webauthn.Credential
}

func (u approverUser) WebAuthnID() []byte                         { return u.handle }
func (u approverUser) WebAuthnName() string                       { return u.id }
func (u approverUser) WebAuthnDisplayName() string                { return u.name }
func (u approverUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// handle returns the approver's WebAuthn user handle, creating it once.
func (s *Service) handle(ctx context.Context, approverID string) ([]byte, error) {
	var h []byte
	err := s.db.QueryRowContext(ctx, `SELECT handle FROM approval_users WHERE approver_id = ?`, approverID).Scan(&h)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	h = make([]byte, 32)
	if _, err := rand.Read(h); err != nil {
		return nil, err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO approval_users (approver_id, handle) VALUES (?, ?) ON CONFLICT DO NOTHING`, approverID, h); err != nil {
		return nil, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT handle FROM approval_users WHERE approver_id = ?`, approverID).Scan(&h)
	return h, err
}

const credColumns = `id, approver_id, credential, sign_count, revoked_at`

func scanCred(sc scanner) (*storedCred, error) {
	var (
		c       storedCred
		raw     []byte
		count   int64
		revoked int64
	)
	if err := sc.Scan(&c.id, &c.approverID, &raw, &count, &revoked); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &c.cred); err != nil {
		return nil, fmt.Errorf("approval: stored credential: %w", err)
	}
	c.signCount = uint32(count)
	c.cred.Authenticator.SignCount = c.signCount
	c.revoked = revoked != 0
	return &c, nil
}

// credential looks a credential up by its raw id (revoked ones included).
func (s *Service) credential(ctx context.Context, q querier, id []byte) (*storedCred, error) {
	c, err := scanCred(q.QueryRowContext(ctx, `SELECT `+credColumns+` FROM approval_credentials WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}

// activeCredentials are the unrevoked credentials of the given approvers.
func (s *Service) activeCredentials(ctx context.Context, approvers []string) ([]*storedCred, error) {
	var out []*storedCred
	for _, a := range approvers {
		rows, err := s.db.QueryContext(ctx, `SELECT `+credColumns+` FROM approval_credentials WHERE approver_id = ? AND revoked_at = 0 ORDER BY created_at`, a)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			c, err := scanCred(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Credentials lists every enrolled key, revoked ones included.
func (s *Service) Credentials(ctx context.Context) ([]Credential, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+credColumns+`, created_at, last_used_at, revoke_reason FROM approval_credentials ORDER BY approver_id, created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Credential
	for rows.Next() {
		var (
			raw                          []byte
			c                            storedCred
			count, revoked, created, use int64
			reason                       string
		)
		if err := rows.Scan(&c.id, &c.approverID, &raw, &count, &revoked, &created, &use, &reason); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &c.cred); err != nil {
			return nil, err
		}
		cr := Credential{
			ID:           b64(c.id),
			ApproverID:   c.approverID,
			ApproverName: s.approverName(c.approverID),
			PublicKey:    b64(c.cred.PublicKey),
			AAGUID:       fmt.Sprintf("%x", c.cred.Authenticator.AAGUID),
			SignCount:    uint32(count),
			CreatedAt:    time.Unix(0, created).UTC(),
			Revoked:      revoked != 0,
			RevokeReason: reason,
		}
		if use != 0 {
			cr.LastUsedAt = time.Unix(0, use).UTC()
		}
		if revoked != 0 {
			cr.RevokedAt = time.Unix(0, revoked).UTC()
		}
		out = append(out, cr)
	}
	return out, rows.Err()
}

// ErrUnknownCredentialID is returned by RevokeCredential for an id that is
// not enrolled.
var ErrUnknownCredentialID = errors.New("approval: no such credential")

// RevokeCredential revokes a key (by its base64url id); it can no longer
// approve, deny or vouch for a new key. Recorded as credential.revoked.
func (s *Service) RevokeCredential(ctx context.Context, credentialID, reason string) error {
	id, err := base64.RawURLEncoding.DecodeString(credentialID)
	if err != nil {
		return fmt.Errorf("%w: %q is not base64url", ErrUnknownCredentialID, credentialID)
	}
	if reason == "" {
		reason = "revoked by admin"
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		c, err := s.credential(ctx, tx, id)
		if err != nil {
			return err
		}
		if c == nil {
			return fmt.Errorf("%w: %s", ErrUnknownCredentialID, credentialID)
		}
		if c.revoked {
			return fmt.Errorf("approval: credential %s is already revoked", credentialID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE approval_credentials SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at = 0`,
			s.now().UnixNano(), reason, id); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind:         vocab.KindCredentialRevoked,
			Approver:     c.approverID,
			CredentialID: credentialID,
			PublicKey:    b64(c.cred.PublicKey),
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
