package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// Wait modes: how the call that raised a request waits for its decision.
const (
	// WaitBlock: the call holds its connection open until the request is
	// decided, then runs the tool and returns the result. The wait lives
	// in the process; it dies with it.
	WaitBlock = "block"
	// WaitPoll: the call returned the auth_req_id at once and the agent
	// asks approval_status. The server itself runs the tool once approved,
	// in whichever process serves by then.
	WaitPoll = "poll"
	// WaitBackchannel: a CIBA backchannel request. Its client polls the
	// token endpoint and redeems the approval for a token; no tool runs.
	// Like poll mode it outlives the process.
	WaitBackchannel = "backchannel"
	// WaitTask: an MCP task-augmented tool call. The call returned a task
	// (its id is the auth_req_id) and the agent's client asks tasks/get
	// and tasks/result. Otherwise it is poll mode: the server runs the
	// tool once approved, in whichever process serves by then.
	WaitTask = "task"
)

// Reasons a request is cancelled by the server rather than by its caller.
const (
	ReasonRestarted    = "server restarted"
	ReasonShuttingDown = "server shutting down"
)

// migrateWaitMode adds wait_mode to a table created before it existed.
// Requests already stored become block mode: nothing would resume them, and
// the version that raised them cancelled every waiting request when it
// stopped, so a restart cancelling the ones still pending is what their
// agents were promised.
//
// The outbox's kind column (migration 2) lets queries tell entries apart
// without parsing them; entries queued before it get theirs from the
// entry itself.
func (s *Service) migrateWaitMode(ctx context.Context) error {
	return s.db.Migrate(ctx, "approval", func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		// Databases made before schema_version may have it already.
		has, err := store.HasColumn(ctx, tx, d, "approval_requests", "wait_mode")
		if err != nil || has {
			return err
		}
		_, err = tx.ExecContext(ctx, `ALTER TABLE approval_requests ADD COLUMN wait_mode TEXT NOT NULL DEFAULT 'block'`)
		return err
	}, func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		has, err := store.HasColumn(ctx, tx, d, "approval_outbox", "kind")
		if err != nil || has {
			return err
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE approval_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT ''`); err != nil {
			return err
		}
		if d != store.SQLite {
			return nil // a PostgreSQL database has had the column from its start
		}
		_, err = tx.ExecContext(ctx, `UPDATE approval_outbox SET kind = COALESCE(json_extract(entry, '$.kind'), '')`)
		return err
	})
}

// Restart settles what the previous process left behind. Call it once at
// start, before serving anything:
//
//   - It first waits until the audit entries that process left in the
//     outbox are in the log, so that the log keeps their order (an entry of
//     another process is taken only once it is outboxStaleAfter old,
//     because that process may still be alive and about to append it).
//   - Every pending block-mode request is then cancelled with reason
//     [ReasonRestarted], recorded: its caller died with the process, and an
//     approval would run nothing. It can never be approved afterwards.
//
// Pending poll-mode and task requests keep their expiry and approved requests stay
// approved; the caller resumes both (see [Service.Unfinished]). Restart
// returns the ids it cancelled.
func (s *Service) Restart(ctx context.Context) ([]string, error) {
	if err := s.drainForeignOutbox(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests
		WHERE state = 'pending' AND wait_mode = ? ORDER BY created_at`, WaitBlock)
	if err != nil {
		return nil, fmt.Errorf("approval: restart: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("approval: restart: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("approval: restart: %w", err)
	}
	var cancelled []string
	for _, id := range ids {
		err := s.endRequest(ctx, id, vocab.StateCancelled, "", ReasonRestarted)
		if errors.Is(err, ErrNotPending) {
			continue // expired meanwhile
		}
		if err != nil {
			return cancelled, fmt.Errorf("approval: restart: cancel %s: %w", id, err)
		}
		cancelled = append(cancelled, id)
	}
	return cancelled, nil
}

// drainForeignOutbox waits until no other process's entries are in the
// outbox, appending them once they are stale.
func (s *Service) drainForeignOutbox(ctx context.Context) error {
	deadline := time.Now().Add(outboxStaleAfter + 5*time.Second)
	for logged := false; ; {
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox WHERE owner <> ?`, s.owner).Scan(&n); err != nil {
			return fmt.Errorf("approval: restart: %w", err)
		}
		if n == 0 {
			return nil
		}
		if !logged {
			s.opts.Logger.Info("approval: waiting for audit entries a previous process left unappended",
				"entries", n, "at_most", outboxStaleAfter)
			logged = true
		}
		if err := s.flush(ctx, true); err != nil {
			return fmt.Errorf("approval: restart: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("approval: restart: %d audit entries of another process are still waiting to be appended after %s; is another countersign serving this data directory?",
				n, outboxStaleAfter)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Unfinished is a request that still needs the server after a restart.
type Unfinished struct {
	Request
	// Args are the canonical arguments the approvers sign over: exactly
	// what runs.
	Args       json.RawMessage
	RedactArgs bool
	Rule       string
	// Claimed says BeginExecution took the request: its one run may have
	// started, and it must not be claimed again.
	Claimed bool
}

// Unfinished returns, oldest first, the requests a server must see to
// their end: pending poll-mode and task requests (run them once approved) and
// approved ones, claimed or not (a backchannel one only matters when
// claimed: otherwise its client redeems it). Call it after Restart.
func (s *Service) Unfinished(ctx context.Context) ([]Unfinished, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests
		WHERE state = 'approved' OR (state = 'pending' AND wait_mode IN (?, ?)) ORDER BY created_at`, WaitPoll, WaitTask)
	if err != nil {
		return nil, fmt.Errorf("approval: unfinished: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("approval: unfinished: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("approval: unfinished: %w", err)
	}
	out := make([]Unfinished, 0, len(ids))
	for _, id := range ids {
		u, err := s.Stored(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("approval: unfinished %s: %w", id, err)
		}
		out = append(out, *u)
	}
	return out, nil
}

// Stored returns request id with what its one run needs: the approved
// arguments and the rule that raised it.
func (s *Service) Stored(ctx context.Context, id string) (*Unfinished, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	return &Unfinished{Request: r.Request, Args: r.args, RedactArgs: r.redact, Rule: r.rule, Claimed: r.execClaim > 0}, nil
}
