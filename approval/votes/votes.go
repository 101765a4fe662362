// Package votes keeps which assertion each counted vote on an approval
// request was, and reads a request's counted approvals back: the audit log
// has the assertions themselves, and an approval token (package token)
// names each by its hash.
package votes

import (
	"context"
	"database/sql"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Vote is one counted approval.
type Vote struct {
	Approver string
	At       time.Time
	// AssertionSHA256 is digest.AssertionSHA256 of the approver's
	// assertion; nil for a vote recorded before it was kept.
	AssertionSHA256 []byte
}

// Schema keeps, beside each vote in approval_votes, which assertion it
// was.
const Schema = `CREATE TABLE IF NOT EXISTS approval_vote_assertions (
	request_id TEXT NOT NULL,
	approver_id TEXT NOT NULL,
	decision TEXT NOT NULL,
	assertion_sha256 BLOB NOT NULL,
	PRIMARY KEY (request_id, approver_id, decision)
)`

// Keep records which assertion (by its digest.AssertionSHA256) a vote
// was, in the vote's transaction.
func Keep(ctx context.Context, tx *sql.Tx, requestID, approver string, decision vocab.Decision, sum [32]byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_vote_assertions (request_id, approver_id, decision, assertion_sha256) VALUES (?,?,?,?)`,
		requestID, approver, decision, sum[:])
	return err
}

// Querier is what Approvals reads through.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Approvals returns the approvals counted on request id, in order.
func Approvals(ctx context.Context, q Querier, id string) ([]Vote, error) {
	rows, err := q.QueryContext(ctx, `SELECT v.approver_id, v.created_at, a.assertion_sha256
		FROM approval_votes v LEFT JOIN approval_vote_assertions a
		  ON a.request_id = v.request_id AND a.approver_id = v.approver_id AND a.decision = v.decision
		WHERE v.request_id = ? AND v.decision = ? ORDER BY v.created_at`, id, vocab.Approve)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Vote
	for rows.Next() {
		var v Vote
		var at int64
		if err := rows.Scan(&v.Approver, &at, &v.AssertionSHA256); err != nil {
			return nil, err
		}
		v.At = time.Unix(0, at).UTC()
		out = append(out, v)
	}
	return out, rows.Err()
}
