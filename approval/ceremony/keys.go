package ceremony

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

// Holders are the approvers among creds with an enrolled, unrevoked key:
// those who can approve now. The others a request names must enroll one
// first.
func Holders(creds []Credential) map[string]bool {
	h := map[string]bool{}
	for _, c := range creds {
		if !c.Revoked {
			h[c.ApproverID] = true
		}
	}
	return h
}

// Split names the approvers ids who can approve now (holders has them)
// apart from those who must enroll a key first; names[i] is ids[i]'s
// name, the id standing in where there is none. A nil holders (not
// known) puts everyone with those who can.
func Split(holders map[string]bool, ids, names []string) (now, enroll []string) {
	for i, id := range ids {
		name := id
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		if holders == nil || holders[id] {
			now = append(now, name)
		} else {
			enroll = append(enroll, name)
		}
	}
	return now, enroll
}

// Key is an enrolled key as stored, with go-webauthn's record of it.
type Key struct {
	ID        []byte
	Approver  string
	Cred      webauthn.Credential
	SignCount uint32
	Revoked   bool
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

// B64 is base64url without padding, how ids and WebAuthn bytes are written.
func B64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// handle returns the approver's WebAuthn user handle, creating it once.
func (rp *RP) handle(ctx context.Context, approverID string) ([]byte, error) {
	var h []byte
	err := rp.db.QueryRowContext(ctx, `SELECT handle FROM approval_users WHERE approver_id = ?`, approverID).Scan(&h)
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
	if _, err := rp.db.ExecContext(ctx, `INSERT INTO approval_users (approver_id, handle) VALUES (?, ?) ON CONFLICT DO NOTHING`, approverID, h); err != nil {
		return nil, err
	}
	err = rp.db.QueryRowContext(ctx, `SELECT handle FROM approval_users WHERE approver_id = ?`, approverID).Scan(&h)
	return h, err
}

const credColumns = `id, approver_id, credential, sign_count, revoked_at`

// Querier is a database or a transaction.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type scanner interface{ Scan(...any) error }

func scanKey(sc scanner) (*Key, error) {
	var (
		c       Key
		raw     []byte
		count   int64
		revoked int64
	)
	if err := sc.Scan(&c.ID, &c.Approver, &raw, &count, &revoked); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &c.Cred); err != nil {
		return nil, fmt.Errorf("approval: stored credential: %w", err)
	}
	c.SignCount = uint32(count)
	c.Cred.Authenticator.SignCount = c.SignCount
	c.Revoked = revoked != 0
	return &c, nil
}

// Lookup finds a key by its raw id, revoked ones included; nil if it is
// not enrolled.
func (rp *RP) Lookup(ctx context.Context, q Querier, id []byte) (*Key, error) {
	c, err := scanKey(q.QueryRowContext(ctx, `SELECT `+credColumns+` FROM approval_credentials WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}

// Active are the unrevoked keys of the given approvers.
func (rp *RP) Active(ctx context.Context, approvers []string) ([]*Key, error) {
	var out []*Key
	for _, a := range approvers {
		rows, err := rp.db.QueryContext(ctx, `SELECT `+credColumns+` FROM approval_credentials WHERE approver_id = ? AND revoked_at = 0 ORDER BY created_at`, a)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			c, err := scanKey(rows)
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
func (rp *RP) Credentials(ctx context.Context) ([]Credential, error) {
	rows, err := rp.db.QueryContext(ctx, `SELECT `+credColumns+`, created_at, last_used_at, revoke_reason FROM approval_credentials ORDER BY approver_id, created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Credential
	for rows.Next() {
		var (
			raw                          []byte
			c                            Key
			count, revoked, created, use int64
			reason                       string
		)
		if err := rows.Scan(&c.ID, &c.Approver, &raw, &count, &revoked, &created, &use, &reason); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &c.Cred); err != nil {
			return nil, err
		}
		cr := Credential{
			ID:           B64(c.ID),
			ApproverID:   c.Approver,
			ApproverName: rp.approverName(c.Approver),
			PublicKey:    B64(c.Cred.PublicKey),
			AAGUID:       fmt.Sprintf("%x", c.Cred.Authenticator.AAGUID),
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

// ErrUnknownCredentialID is returned by Revoke for an id that is
// not enrolled.
var ErrUnknownCredentialID = errors.New("approval: no such credential")

// Revoke revokes a key (by its base64url id) inside tx, and returns it
// as it was: it can no longer approve, deny or vouch for a new key.
func (rp *RP) Revoke(ctx context.Context, tx *sql.Tx, credentialID, reason string) (*Key, error) {
	id, err := base64.RawURLEncoding.DecodeString(credentialID)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not base64url", ErrUnknownCredentialID, credentialID)
	}
	c, err := rp.Lookup(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownCredentialID, credentialID)
	}
	if c.Revoked {
		return nil, fmt.Errorf("approval: credential %s is already revoked", credentialID)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE approval_credentials SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at = 0`,
		rp.now().UnixNano(), reason, id); err != nil {
		return nil, err
	}
	return c, nil
}

// Execer is a database or a transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// use stores a key's record after an assertion with sign counter count,
// refusing one revoked meanwhile or whose counter did not move up.
func (rp *RP) use(ctx context.Context, q Execer, k *Key, updated *webauthn.Credential, count uint32) error {
	credJSON, err := json.Marshal(updated)
	if err != nil {
		return err
	}
	res, err := q.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ?
		WHERE id = ? AND revoked_at = 0 AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		count, credJSON, rp.now().UnixNano(), k.ID, count, count)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return Failf(ErrCounter, "sign counter %d did not increase (or the key was revoked meanwhile)", count)
	}
	return nil
}

// Claimed describes the key an unverified response named, in ids the
// server issued: only an enrolled key is named, with the approver it is
// enrolled to, as a claim. An approval.rejected entry never attributes the
// attempt to that approver: the signature did not verify, so anyone could
// have sent it.
func (rp *RP) Claimed(ctx context.Context, rawID []byte) string {
	if len(rawID) == 0 || len(rawID) > 1023 {
		return ""
	}
	c, err := rp.Lookup(ctx, rp.db, rawID)
	if err != nil || c == nil {
		return ""
	}
	return fmt.Sprintf("claimed credential %s (enrolled to %s), not verified", B64(c.ID), c.Approver)
}
