package approval

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Evidence is what an approved request proves, and all an approval token
// (package token) states: the action digest every approver's key signed,
// and who approved, when, with which assertion.
type Evidence struct {
	Request    *Request
	ArgsSHA256 [32]byte
	// Digest is the action digest of (request, approve).
	Digest [32]byte
	// Votes are the approvals counted towards the quorum, in order.
	Votes []Vote
}

// Vote is one counted approval.
type Vote struct {
	Approver string
	At       time.Time
	// AssertionSHA256 is digest.AssertionSHA256 of the approver's
	// assertion; nil for a vote recorded before it was kept.
	AssertionSHA256 []byte
}

// createVoteAssertions keeps, beside each vote, which assertion it was: the
// audit log has the assertion itself, and a token names it by this hash.
const createVoteAssertions = `CREATE TABLE IF NOT EXISTS approval_vote_assertions (
	request_id TEXT NOT NULL,
	approver_id TEXT NOT NULL,
	decision TEXT NOT NULL,
	assertion_sha256 BLOB NOT NULL,
	PRIMARY KEY (request_id, approver_id, decision)
)`

// keepAssertion records which assertion a vote was, in the vote's
// transaction.
func keepAssertion(ctx context.Context, tx *sql.Tx, requestID, approver string, decision vocab.Decision, v *verified) error {
	raw := v.Parsed.Raw.AssertionResponse
	sum := digest.AssertionSHA256(raw.AuthenticatorData, raw.ClientDataJSON, raw.Signature)
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_vote_assertions (request_id, approver_id, decision, assertion_sha256) VALUES (?,?,?,?)`,
		requestID, approver, decision, sum[:])
	return err
}

// Evidence returns the evidence of a request whose approval is complete and
// in the audit log: approved, or executed or failed after that. Any other
// request gets ErrNotApproved.
func (s *Service) Evidence(ctx context.Context, id string) (*Evidence, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	switch r.State {
	case vocab.StateApproved, vocab.StateExecuted, vocab.StateFailed:
	default:
		return nil, fmt.Errorf("%w: request %s is %s", ErrNotApproved, id, r.State)
	}
	ev := &Evidence{Request: &r.Request}
	if ev.ArgsSHA256, err = hexDecode32(r.argsSHA256); err != nil {
		return nil, err
	}
	if ev.Digest, err = s.digest(r, vocab.Approve); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT v.approver_id, v.created_at, a.assertion_sha256
		FROM approval_votes v LEFT JOIN approval_vote_assertions a
		  ON a.request_id = v.request_id AND a.approver_id = v.approver_id AND a.decision = v.decision
		WHERE v.request_id = ? AND v.decision = ? ORDER BY v.created_at`, id, vocab.Approve)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var v Vote
		var at int64
		if err := rows.Scan(&v.Approver, &at, &v.AssertionSHA256); err != nil {
			return nil, err
		}
		v.At = time.Unix(0, at).UTC()
		ev.Votes = append(ev.Votes, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ev.Votes) < r.Quorum {
		return nil, fmt.Errorf("approval: request %s is %s with %d of %d approvals stored", id, r.State, len(ev.Votes), r.Quorum)
	}
	return ev, nil
}
