package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/countersign/countersign/approval/watch"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// BeginExecution claims an approved request for its single execution. It
// fails unless the request was approved before it expired, its approval is
// in the audit log, and nobody claimed it before.
func (s *Service) BeginExecution(ctx context.Context, id string) error {
	var n int64
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.owners.Unfenced(ctx, tx, s.owner); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET exec_claimed_at = ?, exec_owner = ?
		WHERE id = ? AND state = 'approved' AND exec_claimed_at = 0
		  AND decided_at > 0 AND decided_at < expires_at * 1000000000
		  AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = approval_requests.id)
		  AND NOT EXISTS (SELECT 1 FROM agent_freezes f WHERE f.agent IN (approval_requests.agent, '*'))`,
			s.now().UnixNano(), s.owner, id)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n != 1 {
			return err
		}
		return watch.Announce(ctx, s.db, tx, id) // a task's watcher reports the run as started
	})
	if err != nil {
		return fmt.Errorf("approval: begin execution: %w", err)
	}
	if n != 1 {
		r, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		// Approved, then its agent was frozen: it never runs, now or
		// after an unfreeze.
		if f, err := s.Frozen(ctx, r.Agent); err != nil {
			return err
		} else if f != nil && r.State == vocab.StateApproved && !r.Running {
			return s.failFrozen(context.WithoutCancel(ctx), id, f)
		}
		return ErrNotApproved
	}
	s.notify(id) // a task's watcher reports the run as started
	return nil
}

// Outcome is how the one run of an approved request ended.
type Outcome struct {
	State  vocab.State     // vocab.StateExecuted, vocab.StateFailed or vocab.StateInterrupted
	Result json.RawMessage // what approval_status hands the agent; JSON or empty
	// Note, when set, is added to the request's reason for the approver
	// page (an interruption says so there).
	Note string
	// Record, when its Kind is set, is the audit entry of the run
	// (call.executed, call.failed, call.interrupted). It is written in the
	// same transaction as the state, through the outbox, so a request is
	// never executed without its record, nor recorded twice.
	Record audit.Entry
}

// Finish ends a claimed request with its outcome.
func (s *Service) Finish(ctx context.Context, id string, o Outcome) error {
	switch o.State {
	case vocab.StateExecuted, vocab.StateFailed, vocab.StateInterrupted:
	default:
		return fmt.Errorf("%w: outcome state %q", ErrInvalidRequest, o.State)
	}
	if len(o.Result) > 0 && !json.Valid(o.Result) {
		return fmt.Errorf("%w: result is not JSON", ErrInvalidRequest)
	}
	// Kept sealed, for a while, never in plain text (results.go).
	sealed, err := s.results.Seal(id, o.Result, s.now().Add(s.opts.ResultTTL))
	if err != nil {
		return fmt.Errorf("approval: finish: seal result: %w", err)
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, result = ?,
			reason = CASE WHEN ? = '' THEN reason WHEN reason = '' THEN ? ELSE reason || '; ' || ? END
			WHERE id = ? AND state = 'approved' AND exec_claimed_at > 0`,
			o.State, sealed, o.Note, o.Note, o.Note, id)
		if err != nil {
			return fmt.Errorf("approval: finish: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotExecuting
		}
		if o.Record.Kind == "" {
			return watch.Announce(ctx, s.db, tx, id)
		}
		o.Record.RequestID = id
		return s.enqueue(ctx, tx, id, o.Record)
	})
	if errors.Is(err, ErrNotExecuting) {
		if _, gerr := s.Get(ctx, id); gerr != nil {
			return gerr
		}
	}
	if err != nil {
		return err
	}
	// The outcome must be in the log before the caller returns its
	// result; its row leaving the outbox need not be waited for.
	err = s.ob.Append(ctx)
	s.notify(id)
	return err
}
