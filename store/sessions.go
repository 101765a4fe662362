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
// begin. A sign-in through the identity provider also keeps what the
// provider said of the person (identity, JSON the page writes and reads).
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
	// Sessions through the identity provider (issue 25) keep the person.
	err := db.Migrate(ctx, "approval_sessions", func(ctx context.Context, tx *sql.Tx, d Dialect) error {
		has, err := HasColumn(ctx, tx, d, "approval_sessions", "identity")
		if err != nil || has {
			return err
		}
		_, err = tx.ExecContext(ctx, `ALTER TABLE approval_sessions ADD COLUMN identity TEXT NOT NULL DEFAULT ''`)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &SignInSessions{db: db}, nil
}

// StartSession records that the cookie whose SHA-256 is tokenSHA256
// signs approver in until expires (with identity, what the identity
// provider said of them, or nil), and forgets the sessions that have
// expired.
func (s *SignInSessions) StartSession(ctx context.Context, tokenSHA256 [32]byte, approver string, identity []byte, expires time.Time) error {
	now := time.Now()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM approval_sessions WHERE expires <= ?`, now.UnixMilli()); err != nil {
		return fmt.Errorf("store: sign-in sessions: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO approval_sessions (token_sha256, approver, identity, expires, created) VALUES (?, ?, ?, ?, ?)`,
		tokenSHA256[:], approver, string(identity), expires.UnixMilli(), now.UnixMilli()); err != nil {
		return fmt.Errorf("store: sign-in sessions: %w", err)
	}
	return nil
}

// Session returns the approver the cookie whose SHA-256 is tokenSHA256
// signs in at now, and the identity kept with it (nil: none); ok is false
// for an unknown or expired session.
func (s *SignInSessions) Session(ctx context.Context, tokenSHA256 [32]byte, now time.Time) (approver string, identity []byte, ok bool, err error) {
	var id string
	err = s.db.QueryRowContext(ctx, `SELECT approver, identity FROM approval_sessions WHERE token_sha256 = ? AND expires > ?`,
		tokenSHA256[:], now.UnixMilli()).Scan(&approver, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, fmt.Errorf("store: sign-in sessions: %w", err)
	}
	if id != "" {
		identity = []byte(id)
	}
	return approver, identity, true, nil
}
