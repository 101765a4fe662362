package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SignInSessions keep the approval page's sign-in sessions (package
// approval/page) in the database, so that a session begun on one replica
// is honoured by every replica behind the same URL. A row holds the
// SHA-256 of the session cookie, never the cookie: reading the table
// does not sign anyone in. Expired rows are deleted as new sessions
// begin.
type SignInSessions struct{ db *DB }

func sessionsSchema(d Dialect) string {
	if d == PostgreSQL {
		return `CREATE TABLE IF NOT EXISTS approval_sessions (
	token_sha256 BYTEA PRIMARY KEY,
	approver     TEXT NOT NULL,
	expires      BIGINT NOT NULL, -- unix milliseconds
	created      BIGINT NOT NULL)`
	}
	return `CREATE TABLE IF NOT EXISTS approval_sessions (
	token_sha256 BLOB PRIMARY KEY,
	approver     TEXT NOT NULL,
	expires      INTEGER NOT NULL, -- unix milliseconds
	created      INTEGER NOT NULL
) STRICT, WITHOUT ROWID`
}

// OpenSignInSessions creates the table if needed.
func OpenSignInSessions(ctx context.Context, db *DB) (*SignInSessions, error) {
	if _, err := db.ExecContext(ctx, sessionsSchema(db.Dialect())); err != nil {
		return nil, fmt.Errorf("store: sign-in sessions: %w", err)
	}
	return &SignInSessions{db: db}, nil
}

// StartSession records that the cookie whose SHA-256 is tokenSHA256
// signs approver in until expires, and forgets the sessions that have
// expired.
func (s *SignInSessions) StartSession(ctx context.Context, tokenSHA256 [32]byte, approver string, expires time.Time) error {
	now := time.Now()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM approval_sessions WHERE expires <= ?`, now.UnixMilli()); err != nil {
		return fmt.Errorf("store: sign-in sessions: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO approval_sessions (token_sha256, approver, expires, created) VALUES (?, ?, ?, ?)`,
		tokenSHA256[:], approver, expires.UnixMilli(), now.UnixMilli()); err != nil {
		return fmt.Errorf("store: sign-in sessions: %w", err)
	}
	return nil
}

// Session returns the approver the cookie whose SHA-256 is tokenSHA256
// signs in at now; ok is false for an unknown or expired session.
func (s *SignInSessions) Session(ctx context.Context, tokenSHA256 [32]byte, now time.Time) (approver string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT approver FROM approval_sessions WHERE token_sha256 = ? AND expires > ?`,
		tokenSHA256[:], now.UnixMilli()).Scan(&approver)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("store: sign-in sessions: %w", err)
	}
	return approver, true, nil
}
