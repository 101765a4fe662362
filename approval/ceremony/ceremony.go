// Package ceremony is the WebAuthn relying party of approval: the enrolled
// security keys and their user handles, the one-time enrollment links, the
// ceremonies a page starts and finishes (decision, batch, sign-in,
// enrollment), and the named checks an assertion must pass. It wires
// go-webauthn to our own challenge, the action digest that package
// approval computes.
//
// It records nothing itself. What an audit entry needs (a revoked key, a
// registered key, a refused check) it returns, and approval writes the
// entry in the transaction of the change it describes: functions that
// change keys or links take that transaction.
//
// Every ceremony is single use: the first attempt to finish it uses it up,
// whatever the outcome. A refusal is a *CheckError that names the check.
//
// Enrollment: the first key of an approver comes from a one-time link that an
// admin creates (`countersign approvers enroll ID`). Further keys also need a
// link, and the link's page first asks for an assertion from one of the
// approver's existing, unrevoked keys before it registers the new one. So a
// leaked link alone never adds a key to an approver who already has one.
package ceremony

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
)

// TTL bounds how long a started ceremony can be finished.
const TTL = 5 * time.Minute

// sweepEvery is how often expired ceremonies are deleted.
const sweepEvery = time.Minute

// Config configures an RP.
type Config struct {
	RPID, RPName string
	Origins      []string // exact origins, with port
	EnrollTTL    time.Duration
	Now          func() time.Time
	Logger       *slog.Logger

	// Attestation and AttestationRoots: approval.Options.
	Attestation      string
	AttestationRoots *x509.CertPool

	// Approver returns a configured approver's display name; ok is false
	// for one not (or no longer) in the configuration.
	Approver func(id string) (name string, ok bool)

	// People, when set, are the people of the company's identity
	// provider: approvers beside those of Approver, known by their
	// derived ids; an approval by one of them holds only while the
	// provider still puts them in a group that maps to a role
	// (People.Eligible).
	People *identity.People
}

// RP is the relying party over the database's key and ceremony tables.
type RP struct {
	db  *store.DB
	cfg Config
	wa  *webauthn.WebAuthn
}

// New creates the tables if needed.
func New(ctx context.Context, db *store.DB, cfg Config) (*RP, error) {
	wa, err := webauthn.New(&webauthn.Config{
		RPID:                  cfg.RPID,
		RPDisplayName:         cfg.RPName,
		RPOrigins:             cfg.Origins,
		AttestationPreference: protocol.PreferNoAttestation,
	})
	if err != nil {
		return nil, fmt.Errorf("approval: webauthn: %w", err)
	}
	for _, stmt := range schema {
		if err := db.CreateTables(ctx, stmt); err != nil {
			return nil, fmt.Errorf("approval: create tables: %w", err)
		}
	}
	if err := db.Migrate(ctx, "approval_enrollments", migrations...); err != nil {
		return nil, err
	}
	return &RP{db: db, cfg: cfg, wa: wa}, nil
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS approval_ceremonies (
		id TEXT PRIMARY KEY,
		kind TEXT NOT NULL,
		request_id TEXT NOT NULL DEFAULT '',
		enrollment BLOB,
		decision TEXT NOT NULL DEFAULT '',
		session BLOB NOT NULL,
		expires_at INTEGER NOT NULL,
		used INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE IF NOT EXISTS approval_used_assertions (
		hash BLOB PRIMARY KEY,
		request_id TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS approval_users (
		approver_id TEXT PRIMARY KEY,
		handle BLOB NOT NULL UNIQUE
	)`,
	`CREATE TABLE IF NOT EXISTS approval_credentials (
		id BLOB PRIMARY KEY,
		approver_id TEXT NOT NULL,
		credential BLOB NOT NULL,
		sign_count INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		last_used_at INTEGER NOT NULL DEFAULT 0,
		revoked_at INTEGER NOT NULL DEFAULT 0,
		revoke_reason TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE TABLE IF NOT EXISTS approval_enrollments (
		token_hash BLOB PRIMARY KEY,
		approver_id TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		verified_at INTEGER NOT NULL DEFAULT 0,
		verified_by BLOB,
		used_at INTEGER NOT NULL DEFAULT 0
	)`,
}

// migrations change the tables of older versions.
var migrations = []store.Migration{
	// A self-service link (issue 25) keeps who made it at the identity
	// provider: JSON of identity.Person, '' for an admin's link.
	func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		// A database whose schema_version was lost may have it already.
		has, err := store.HasColumn(ctx, tx, d, "approval_enrollments", "identity")
		if err != nil || has {
			return err
		}
		_, err = tx.ExecContext(ctx, `ALTER TABLE approval_enrollments ADD COLUMN identity TEXT NOT NULL DEFAULT ''`)
		return err
	},
}

func (rp *RP) now() time.Time { return rp.cfg.Now() }

// approver is a configured approver's display name, or the name of a
// person of the identity provider (Config.People); ok is false for
// neither.
func (rp *RP) approver(id string) (string, bool) {
	if name, ok := rp.cfg.Approver(id); ok || rp.cfg.People == nil {
		return name, ok
	}
	k, ok := rp.cfg.People.Lookup(id)
	return k.DisplayName(), ok
}

// approverName is the configured display name, or the id.
func (rp *RP) approverName(id string) string {
	if name, ok := rp.approver(id); ok && name != "" {
		return name
	}
	return id
}

// ValidID reports whether s is a request or ceremony id as the server
// issues them: a UUID in its canonical 36-character form.
func ValidID(s string) bool {
	if len(s) != 36 {
		return false
	}
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

// BeginAssertion starts an assertion ceremony of kind for subject (a
// request id, or a batch's key) whose challenge is challenge, allowing
// keys and asking for user verification uv. decision is kept with it.
func (rp *RP) BeginAssertion(ctx context.Context, kind, subject string, decision vocab.Decision, challenge [32]byte, keys []*Key, uv vocab.UserVerification) (string, protocol.PublicKeyCredentialRequestOptions, error) {
	var allow []protocol.CredentialDescriptor
	for _, k := range keys {
		allow = append(allow, k.Cred.Descriptor())
	}
	assertion, session, err := rp.wa.BeginDiscoverableLogin(
		webauthn.WithChallenge(challenge[:]),
		webauthn.WithAllowedCredentials(allow),
		webauthn.WithUserVerification(uvRequirement(uv)),
	)
	if err != nil {
		return "", protocol.PublicKeyCredentialRequestOptions{}, fmt.Errorf("approval: begin assertion: %w", err)
	}
	// The ceremony outlives the request on purpose: an assertion that
	// arrives late is refused by the "expired" check, which says so.
	id, err := rp.store(ctx, kind, subject, nil, decision, session, rp.now().Add(TTL))
	return id, assertion.Response, err
}

func uvRequirement(uv vocab.UserVerification) protocol.UserVerificationRequirement {
	switch uv {
	case vocab.UVRequired:
		return protocol.VerificationRequired
	case vocab.UVDiscouraged:
		return protocol.VerificationDiscouraged
	}
	return protocol.VerificationPreferred
}

func (rp *RP) store(ctx context.Context, kind, requestID string, enrollment []byte, decision vocab.Decision, session *webauthn.SessionData, expires time.Time) (string, error) {
	b, err := json.Marshal(session)
	if err != nil {
		return "", err
	}
	id := uuid.NewString()
	_, err = rp.db.ExecContext(ctx, `INSERT INTO approval_ceremonies (id, kind, request_id, enrollment, decision, session, expires_at) VALUES (?,?,?,?,?,?,?)`,
		id, kind, requestID, enrollment, decision, b, expires.UnixNano())
	return id, err
}

// Take consumes the ceremony id of kind for subject: it is used up by the
// first attempt to finish it, whatever the outcome.
func (rp *RP) Take(ctx context.Context, id, kind, subject string) (vocab.Decision, webauthn.SessionData, error) {
	return rp.take(ctx, id, kind, subject, nil)
}

func (rp *RP) take(ctx context.Context, id, kind, requestID string, enrollment []byte) (decision vocab.Decision, session webauthn.SessionData, err error) {
	if !ValidID(id) {
		return "", session, Failf(ErrCeremony, "malformed ceremony id")
	}
	var raw []byte
	var expires int64
	// An empty enrollment is bytes, not NULL, on both engines.
	none := append([]byte{}, enrollment...)
	err = rp.db.QueryRowContext(ctx, `UPDATE approval_ceremonies SET used = 1
		WHERE id = ? AND kind = ? AND request_id = ? AND COALESCE(enrollment, ?) = ? AND used = 0
		RETURNING decision, session, expires_at`, id, kind, requestID, []byte{}, none).Scan(&decision, &raw, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return "", session, Failf(ErrCeremony, "no unused ceremony %s for this request", id)
	}
	if err != nil {
		return "", session, err
	}
	if !rp.now().Before(time.Unix(0, expires)) {
		return "", session, Failf(ErrCeremony, "ceremony expired")
	}
	if err := json.Unmarshal(raw, &session); err != nil {
		return "", session, fmt.Errorf("approval: stored session: %w", err)
	}
	return decision, session, nil
}

// Sweep deletes ceremonies past their expiry, finished or not, until ctx
// ends: a begin nobody finishes leaves no row behind for longer than TTL
// plus one sweep. The rows are shared by all replicas, so one runs it at
// a time (the caller's leadership).
func (rp *RP) Sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := rp.DeleteExpired(ctx); err != nil && ctx.Err() == nil {
				rp.cfg.Logger.Warn("approval: ceremony sweep", "err", err)
			}
		}
	}
}

// DeleteExpired removes every ceremony whose expiry has passed.
func (rp *RP) DeleteExpired(ctx context.Context) (int64, error) {
	res, err := rp.db.ExecContext(ctx, `DELETE FROM approval_ceremonies WHERE expires_at <= ?`, rp.now().UnixNano())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
