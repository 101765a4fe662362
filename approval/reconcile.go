package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/countersign/countersign/approval/reconcile"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// A request whose run was interrupted may have acted or not; Reconcile
// records what a person found (package reconcile keeps it): a
// call.reconciled entry, and the finding added to the request's reason,
// where the page, approval_status and tasks/get show it. It changes
// nothing else: the request stays interrupted and never runs again. A call
// that had no request is settled by ReconcileCall, named by the seq of its
// call.interrupted entry.

// checked is the finding bounded for the log, or why it cannot be recorded.
func checked(f reconcile.Finding) (reconcile.Finding, error) {
	f = f.Bounded()
	if f.By == "" {
		return f, fmt.Errorf("%w: who found out is required", ErrInvalidRequest)
	}
	return f, nil
}

// Reconcile records a person's finding about request id, whose call was
// interrupted. A request in any other state is reconcile.ErrNotInterrupted; a second
// finding is reconcile.ErrReconciled.
func (s *Service) Reconcile(ctx context.Context, id string, f reconcile.Finding) (*Request, error) {
	f, err := checked(f)
	if err != nil {
		return nil, err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		if r.State != vocab.StateInterrupted {
			return fmt.Errorf("%w (it is %s)", reconcile.ErrNotInterrupted, r.State)
		}
		if err := reconcile.PutRequest(ctx, tx, id, f, s.now()); err != nil {
			return err
		}
		text := f.String()
		if _, err := tx.ExecContext(ctx, `UPDATE approval_requests SET
			reason = CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END WHERE id = ?`, text, text, id); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, id, s.requestEntry(r, vocab.KindCallReconciled, text))
	})
	if err != nil {
		return nil, err
	}
	if err := s.flush(ctx, false); err != nil {
		return nil, err
	}
	s.notify(id)
	return s.Get(ctx, id)
}

// Unreconciled returns, oldest first, the requests whose call was
// interrupted and that nobody has reconciled yet: what a person still has
// to look into.
func (s *Service) Unreconciled(ctx context.Context) ([]*Request, error) {
	return s.selected(ctx, `SELECT id FROM approval_requests WHERE state = ?
		AND NOT EXISTS (SELECT 1 FROM approval_reconciled c WHERE c.request_id = approval_requests.id)
		ORDER BY decided_at, id`, vocab.StateInterrupted)
}

func (s *Service) callLog() (reconcile.Log, error) {
	l, ok := s.rec.(reconcile.Log)
	if !ok {
		return nil, errors.New("approval: the audit log cannot be read, so interrupted calls cannot be found")
	}
	return l, nil
}

// ReconcileCall records a person's finding about the call whose
// call.interrupted entry is at seq, and returns the call.reconciled entry
// recorded. A seq that names no entry is ErrNotFound; an entry other than
// a call.interrupted is reconcile.ErrNotInterrupted; a second finding is
// reconcile.ErrReconciled. A call that had a request is reconciled as its request
// (Reconcile), so either name of it works.
func (s *Service) ReconcileCall(ctx context.Context, seq int64, f reconcile.Finding) (audit.Entry, error) {
	f, err := checked(f)
	if err != nil {
		return audit.Entry{}, err
	}
	l, err := s.callLog()
	if err != nil {
		return audit.Entry{}, err
	}
	call, err := reconcile.Interrupted(ctx, l, seq)
	switch {
	case errors.Is(err, reconcile.ErrNoEntry):
		return audit.Entry{}, fmt.Errorf("%w: the audit log has no entry #%d", ErrNotFound, seq)
	case err != nil:
		return audit.Entry{}, err
	case call.RequestID == "":
		return reconcile.RecordCall(ctx, outboxPort{s}, call, f, s.now())
	}
	r, err := s.Reconcile(ctx, call.RequestID, f)
	if errors.Is(err, ErrNotFound) {
		// Not "no such entry": the entry is there, its request is not.
		return audit.Entry{}, fmt.Errorf("approval: #%d is the call of request %s, which this database does not hold", seq, call.RequestID)
	}
	if err != nil {
		return audit.Entry{}, err
	}
	return audit.Entry{Kind: vocab.KindCallReconciled, RequestID: r.ID, Agent: r.Agent, Tool: r.Tool, Reason: f.String()}, nil
}

// UnreconciledCalls returns, oldest first, the call.interrupted entries
// of calls without a request that nobody has reconciled yet. (Those of
// requests are Unreconciled's.)
func (s *Service) UnreconciledCalls(ctx context.Context) ([]audit.Entry, error) {
	l, err := s.callLog()
	if err != nil {
		return nil, err
	}
	return reconcile.UnreconciledCalls(ctx, s.db, l)
}
