// Package grant keeps standing grants: the grant a request offers, the
// terms an approver chose for it (signed with the approval), the grants
// made, and their uses and revocations.
//
// A request may come with a grant offer: a condition the server derived
// from it and the policy's caps. The approver who approves it may, with the
// same tap, grant that further calls matching the condition run without a
// new one, for a duration and a number of calls they choose within the
// caps. The key then signs the grant digest (digest.ComputeGrant) instead
// of the plain action digest. A grant is in force once that approval is in
// the audit log, until it expires, is used up, or is revoked. Each call
// takes one use, atomically, so concurrent calls never exceed the count.
//
// Package approval decides when a grant is offered, chosen, made and
// revoked, and records each in the audit log; this package stores them.
// Whether a grant's approval is in the log yet is read from approval's
// outbox tables (approval_outbox, approval_logged_assertions).
package grant

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/digest"
)

// Offer is what the approver of a request is offered.
type Offer struct {
	Condition   string        // CEL over agent, tool and args, derived by the server
	MaxDuration time.Duration // the policy's cap
	MaxCalls    int           // the policy's cap
}

// Choice is what the approver chose within the offer.
type Choice struct {
	Duration time.Duration
	Calls    int
}

// Grant is a standing grant as stored.
type Grant struct {
	ID, RequestID      string
	Agent, Tool        string
	Approver           string // who granted it
	Condition          string
	MaxCalls, Used     int
	CreatedAt          time.Time
	ExpiresAt          time.Time
	RevokedAt          time.Time // zero while not revoked
	RevokedBy          string
	Seq                int64 // of the approval.assertion that created it; 0 until logged
	ApproverName       string
	RevokedByName      string
	requestApprovedLog bool
}

// Active reports whether the grant can still let a call through at now
// (once its approval is logged).
func (g *Grant) Active(now time.Time) bool {
	return g.RevokedAt.IsZero() && now.Before(g.ExpiresAt) && g.Used < g.MaxCalls
}

// logged reports whether the approval that made the grant is in the log.
func (g *Grant) logged() bool { return g.requestApprovedLog && g.Seq != 0 }

// Use is one call a grant let through.
type Use struct {
	Grant
	Use       int       // this call is the Use-th of MaxCalls
	DecidedAt time.Time // when the use was taken, inside its transaction
}

// Errors of grants.
var (
	ErrNoGrant = errors.New("approval: no such grant")
	// ErrGrantSpent: the grant is revoked, expired, used up or not yet
	// logged; the call must wait for a human.
	ErrGrantSpent = errors.New("approval: the grant is no longer in force")
	// ErrRevoked: the grant was revoked already.
	ErrRevoked = errors.New("approval: the grant was already revoked")
)

// Terms are a grant's signed terms: the challenge of the ceremony that
// creates it is their digest.
type Terms struct {
	ID        string
	Condition string
	MaxCalls  int
	Expires   time.Time // whole seconds
}

// Digest is the grant digest over the request's action digest.
func (t *Terms) Digest(action [32]byte) ([32]byte, error) {
	return digest.ComputeGrant(digest.Grant{Request: action, GrantID: t.ID, Condition: t.Condition, MaxCalls: t.MaxCalls, ExpiresAt: t.Expires})
}

// Store is the grant tables of one database.
type Store struct {
	db *store.DB
	// name is an approver's display name.
	name func(id string) string
}

// New creates the grant tables if needed.
func New(ctx context.Context, db *store.DB, name func(id string) string) (*Store, error) {
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS approval_grant_offers (
			request_id TEXT PRIMARY KEY,
			condition TEXT NOT NULL,
			max_duration_ms INTEGER NOT NULL,
			max_calls INTEGER NOT NULL
		)`,
		`CREATE TABLE IF NOT EXISTS approval_grant_ceremonies (
			ceremony_id TEXT PRIMARY KEY,
			grant_id TEXT NOT NULL,
			max_calls INTEGER NOT NULL,
			expires_at INTEGER NOT NULL
		)`,
		`CREATE TABLE IF NOT EXISTS approval_grants (
			id TEXT PRIMARY KEY,
			request_id TEXT NOT NULL UNIQUE,
			agent TEXT NOT NULL,
			tool TEXT NOT NULL,
			approver TEXT NOT NULL,
			condition TEXT NOT NULL,
			max_calls INTEGER NOT NULL,
			used INTEGER NOT NULL DEFAULT 0,
			created_at INTEGER NOT NULL,
			expires_at INTEGER NOT NULL,
			revoked_at INTEGER NOT NULL DEFAULT 0,
			revoked_by TEXT NOT NULL DEFAULT ''
		)`,
	} {
		if err := db.CreateTables(ctx, stmt); err != nil {
			return nil, fmt.Errorf("approval: create tables: %w", err)
		}
	}
	return &Store{db: db, name: name}, nil
}

// PutOffer stores request id's grant offer inside the request's creating
// transaction.
func PutOffer(ctx context.Context, tx *sql.Tx, id string, o *Offer) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_grant_offers (request_id, condition, max_duration_ms, max_calls) VALUES (?,?,?,?)`,
		id, o.Condition, o.MaxDuration.Milliseconds(), o.MaxCalls)
	return err
}

// Offered returns the grant offered with a request, or nil.
func (s *Store) Offered(ctx context.Context, requestID string) (*Offer, error) {
	var o Offer
	var ms int64
	err := s.db.QueryRowContext(ctx, `SELECT condition, max_duration_ms, max_calls FROM approval_grant_offers WHERE request_id = ?`, requestID).
		Scan(&o.Condition, &ms, &o.MaxCalls)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	o.MaxDuration = time.Duration(ms) * time.Millisecond
	return &o, nil
}

// PutCeremony keeps the terms a decision ceremony would create a grant
// with.
func (s *Store) PutCeremony(ctx context.Context, ceremony string, t *Terms) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO approval_grant_ceremonies (ceremony_id, grant_id, max_calls, expires_at) VALUES (?,?,?,?)`,
		ceremony, t.ID, t.MaxCalls, t.Expires.Unix())
	return err
}

// Ceremony returns the terms of the grant a decision ceremony creates, or
// nil.
func (s *Store) Ceremony(ctx context.Context, ceremony string) (*Terms, error) {
	var t Terms
	var expires int64
	err := s.db.QueryRowContext(ctx, `SELECT g.grant_id, g.max_calls, g.expires_at, o.condition
		FROM approval_grant_ceremonies g JOIN approval_ceremonies c ON c.id = g.ceremony_id
		JOIN approval_grant_offers o ON o.request_id = c.request_id
		WHERE g.ceremony_id = ?`, ceremony).Scan(&t.ID, &t.MaxCalls, &expires, &t.Condition)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t.Expires = time.Unix(expires, 0).UTC()
	return &t, nil
}

// Create stores the grant t that approver made on request requestID (of
// agent's call to tool), inside the approval's transaction.
func Create(ctx context.Context, tx *sql.Tx, t *Terms, requestID, agent, tool, approver string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_grants (id, request_id, agent, tool, approver, condition, max_calls, created_at, expires_at)
		VALUES (?,?,?,?,?,?,?,?,?)`, t.ID, requestID, agent, tool, approver, t.Condition, t.MaxCalls, now.UnixNano(), t.Expires.Unix())
	return err
}

// columns read a Grant; the last says its approval (the assertion and
// approval.approved) is still in the outbox, not yet logged, and seq is the
// assertion's.
const columns = `g.id, g.request_id, g.agent, g.tool, g.approver, g.condition, g.max_calls, g.used, g.created_at, g.expires_at,
	g.revoked_at, g.revoked_by, COALESCE(l.seq, 0),
	NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = g.request_id
		AND o.kind IN ('approval.assertion', 'approval.approved'))
	FROM approval_grants g LEFT JOIN approval_logged_assertions l ON l.request_id = g.request_id AND l.approver_id = g.approver`

// Querier is a database or a transaction.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Query returns the grants matching where (over g, the grant), read
// through q.
func (s *Store) Query(ctx context.Context, q Querier, where string, args ...any) ([]*Grant, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+columns+` WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Grant
	for rows.Next() {
		var g Grant
		var created, expires, revoked int64
		if err := rows.Scan(&g.ID, &g.RequestID, &g.Agent, &g.Tool, &g.Approver, &g.Condition, &g.MaxCalls, &g.Used,
			&created, &expires, &revoked, &g.RevokedBy, &g.Seq, &g.requestApprovedLog); err != nil {
			return nil, err
		}
		g.CreatedAt = time.Unix(0, created).UTC()
		g.ExpiresAt = time.Unix(expires, 0).UTC()
		if revoked != 0 {
			g.RevokedAt = time.Unix(0, revoked).UTC()
		}
		g.ApproverName = s.name(g.Approver)
		if g.RevokedBy != "" {
			g.RevokedByName = s.name(g.RevokedBy)
		}
		out = append(out, &g)
	}
	return out, rows.Err()
}

// Active returns the grants that may let a call of agent's to tool
// through at now: logged, not revoked, not expired, not used up.
func (s *Store) Active(ctx context.Context, agent, tool string, now time.Time) ([]*Grant, error) {
	gs, err := s.Query(ctx, s.db, `g.agent = ? AND g.tool = ? AND g.revoked_at = 0 AND g.used < g.max_calls AND g.expires_at > ?
		ORDER BY g.created_at`, agent, tool, now.Unix())
	if err != nil {
		return nil, err
	}
	var out []*Grant
	for _, g := range gs {
		if g.logged() {
			out = append(out, g)
		}
	}
	return out, nil
}

// Take takes one use of grant id inside tx, checking as of now (read under
// the write lock) that the grant is logged, not revoked, not expired and
// not used up: of concurrent calls, at most MaxCalls get one. It returns
// ErrGrantSpent when the grant cannot be used; the caller then rolls tx
// back.
func (s *Store) Take(ctx context.Context, tx *sql.Tx, id string, now time.Time) (*Use, error) {
	res, err := tx.ExecContext(ctx, `UPDATE approval_grants SET used = used + 1
		WHERE id = ? AND revoked_at = 0 AND used < max_calls AND expires_at * 1000000000 > ?`, id, now.UnixNano())
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, ErrGrantSpent
	}
	gs, err := s.Query(ctx, tx, `g.id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(gs) != 1 || !gs[0].logged() {
		return nil, ErrGrantSpent
	}
	return &Use{Grant: *gs[0], Use: gs[0].Used, DecidedAt: now}, nil
}

// Revoke ends grant g inside tx, as of now, by by; ErrRevoked if it was
// revoked already.
func Revoke(ctx context.Context, tx *sql.Tx, id, by string, now time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE approval_grants SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at = 0`, now.UnixNano(), by, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrRevoked
	}
	return nil
}

// Ender ends one grant inside tx with its grant.revoked entry; package
// approval implements it, whose outbox records it.
type Ender interface {
	// Owner is this process's outbox owner.
	Owner() string
	RevokeGrant(ctx context.Context, tx *sql.Tx, id, by, reason string, now time.Time) (bool, error)
}

// RevokeApprovedBy revokes, in one transaction, every grant in force at
// now that approver made, each through e (so each gets its grant.revoked),
// and returns their ids. A revoked, expired or used-up grant is left as it
// is, so asking twice revokes nothing more. As a freeze does (package
// freeze), a grant whose approval another process's outbox still holds is
// left to that process's own recheck; the guard refuses its uses meanwhile.
func (s *Store) RevokeApprovedBy(ctx context.Context, approver, by, reason string, now time.Time, e Ender) ([]string, error) {
	var revoked []string
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		revoked = nil // InTx may run this again
		gs, err := s.Query(ctx, tx, `g.approver = ? AND g.revoked_at = 0 AND g.used < g.max_calls AND g.expires_at > ?
			AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = g.request_id AND o.owner <> ?) ORDER BY g.created_at`,
			approver, now.Unix(), e.Owner())
		if err != nil {
			return err
		}
		for _, g := range gs {
			if ok, err := e.RevokeGrant(ctx, tx, g.ID, by, reason, now); err != nil {
				return err
			} else if ok {
				revoked = append(revoked, g.ID)
			}
		}
		return nil
	})
	return revoked, err
}
