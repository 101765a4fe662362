package approval

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/approval/expiring"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/approval/votes"
)

func (s *Service) migrate(ctx context.Context) error {
	for _, stmt := range schema {
		if err := s.db.CreateTables(ctx, stmt); err != nil {
			return fmt.Errorf("approval: create tables: %w", err)
		}
	}
	return s.migrateWaitMode(ctx)
}

// schema is the tables of requests, decisions and the outbox; the other
// packages of approval create their own (Service.openParts).
var schema = []string{
	`CREATE TABLE IF NOT EXISTS approval_requests (
		id TEXT PRIMARY KEY,
		tool TEXT NOT NULL,
		agent TEXT NOT NULL,
		args BLOB NOT NULL,
		args_sha256 TEXT NOT NULL,
		redact_args INTEGER NOT NULL,
		authorization_details BLOB NOT NULL,
		summary TEXT NOT NULL,
		display TEXT NOT NULL,
		level TEXT NOT NULL,
		rule TEXT NOT NULL,
		approvers TEXT NOT NULL,
		quorum INTEGER NOT NULL,
		user_verification TEXT NOT NULL,
		code TEXT NOT NULL,
		binding_message TEXT NOT NULL,
		nonce BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		interval_ms INTEGER NOT NULL,
		state TEXT NOT NULL,
		decided_by TEXT NOT NULL DEFAULT '',
		decided_at INTEGER NOT NULL DEFAULT 0,
		reason TEXT NOT NULL DEFAULT '',
		exec_claimed_at INTEGER NOT NULL DEFAULT 0,
		result BLOB,
		last_poll INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE INDEX IF NOT EXISTS approval_requests_state ON approval_requests (state, expires_at)`,
	`CREATE INDEX IF NOT EXISTS approval_requests_agent_state ON approval_requests (agent, state, expires_at)`, // an agent's pending
	// The page's history, the latest decided first: read in this order, it
	// stops at the 50th, and holds none of the pending to walk past.
	`CREATE INDEX IF NOT EXISTS approval_requests_decided ON approval_requests (decided_at, created_at) WHERE state <> 'pending'`,
	`CREATE TABLE IF NOT EXISTS approval_votes (
		request_id TEXT NOT NULL REFERENCES approval_requests(id),
		approver_id TEXT NOT NULL,
		credential_id BLOB NOT NULL,
		decision TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (request_id, approver_id, decision)
	)`,
	`CREATE TABLE IF NOT EXISTS approval_outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		request_id TEXT NOT NULL DEFAULT '',
		entry BLOB NOT NULL,
		kind TEXT NOT NULL DEFAULT '', -- the entry's, for queries (grant.columns)
		owner TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	// The audit seq of each approver's approval.assertion entry, so the
	// approval.approved entry can name them: seqs are only known once the
	// outbox has appended the entries.
	`CREATE TABLE IF NOT EXISTS approval_logged_assertions (
		request_id TEXT NOT NULL,
		approver_id TEXT NOT NULL,
		seq INTEGER NOT NULL,
		PRIMARY KEY (request_id, approver_id)
	)`,
	votes.Schema,
	sealed.ResultIndex,
	expiring.Schema,
	pending.Schema,
	createBatchable,
}
