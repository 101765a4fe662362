package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/vocab"
)

// A request whose run was interrupted (outcome unknown) may have acted or
// not; only a person can find out, by looking at the system it acted on.
// Reconcile records what they found: a call.reconciled entry, and the
// finding added to the request's reason, where the page, approval_status
// and tasks/get show it. It changes nothing else: the request stays
// interrupted and never runs again, and a finding is recorded once.
//
// A call that had no request (a routine call, or one a standing grant let
// through) can be interrupted too. ReconcileCall settles it, named by the
// seq of its call.interrupted entry: the log is the only record of it, and
// a seq names one entry for good. Its finding is a call.reconciled with
// interrupted_seq, recorded once (approval_reconciled_calls).

// Errors of Reconcile.
var (
	ErrNotInterrupted = errors.New("approval: the request's call was not interrupted; only an unknown outcome can be reconciled")
	ErrReconciled     = errors.New("approval: the call was already reconciled; a finding is recorded once")
)

const createReconciled = `CREATE TABLE IF NOT EXISTS approval_reconciled (
	request_id TEXT PRIMARY KEY REFERENCES approval_requests(id),
	ran INTEGER NOT NULL,
	found_by TEXT NOT NULL,
	note TEXT NOT NULL,
	created_at INTEGER NOT NULL
)`

// createReconciledCalls holds the findings about calls without a request,
// by the seq of their call.interrupted: its primary key makes a second
// finding fail in the transaction that would record it.
const createReconciledCalls = `CREATE TABLE IF NOT EXISTS approval_reconciled_calls (
	interrupted_seq INTEGER PRIMARY KEY,
	ran INTEGER NOT NULL,
	found_by TEXT NOT NULL,
	note TEXT NOT NULL,
	created_at INTEGER NOT NULL
)`

// maxReconcileText bounds the who and the note a person gives: they go
// into the signed log.
const maxReconcileText = 500

// Finding is what a person found out about an interrupted call.
type Finding struct {
	Ran  bool   // the call took effect (false: it did not)
	By   string // who found out, as the operator names them
	Note string // how they know, optional
}

// Finding says the finding as the log and the page show it.
func (f Finding) String() string {
	what := "did not run"
	if f.Ran {
		what = "ran"
	}
	s := fmt.Sprintf("reconciled: %s, reconciled by %s", what, f.By)
	if f.Note != "" {
		s += ": " + f.Note
	}
	return s
}

// checked is the finding bounded for the log, or why it cannot be recorded.
func (f Finding) checked() (Finding, error) {
	f.By = authzdetails.Clean(strings.TrimSpace(f.By), maxReconcileText)
	f.Note = authzdetails.Clean(strings.TrimSpace(f.Note), maxReconcileText)
	if f.By == "" {
		return f, fmt.Errorf("%w: who found out is required", ErrInvalidRequest)
	}
	return f, nil
}

// Reconcile records a person's finding about request id, whose call was
// interrupted. A request in any other state is ErrNotInterrupted; a second
// finding is ErrReconciled.
func (s *Service) Reconcile(ctx context.Context, id string, f Finding) (*Request, error) {
	f, err := f.checked()
	if err != nil {
		return nil, err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		if r.State != vocab.StateInterrupted {
			return fmt.Errorf("%w (it is %s)", ErrNotInterrupted, r.State)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO approval_reconciled (request_id, ran, found_by, note, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING`, id, f.Ran, f.By, f.Note, s.now().UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrReconciled
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

// callLog is the part of *audit.Log that reconciling a call without a
// request reads: the call's own entry, and the interrupted calls.
type callLog interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
	Interrupted(ctx context.Context) ([]audit.Entry, error)
}

func (s *Service) callLog() (callLog, error) {
	l, ok := s.rec.(callLog)
	if !ok {
		return nil, errors.New("approval: the audit log cannot be read, so interrupted calls cannot be found")
	}
	return l, nil
}

// ReconcileCall records a person's finding about the call whose
// call.interrupted entry is at seq, and returns the call.reconciled entry
// recorded. A seq that names no entry is ErrNotFound; an entry other than
// a call.interrupted is ErrNotInterrupted; a second finding is
// ErrReconciled. A call that had a request is reconciled as its request
// (Reconcile), so either name of it works.
func (s *Service) ReconcileCall(ctx context.Context, seq int64, f Finding) (audit.Entry, error) {
	f, err := f.checked()
	if err != nil {
		return audit.Entry{}, err
	}
	l, err := s.callLog()
	if err != nil {
		return audit.Entry{}, err
	}
	var es []audit.Entry
	if seq > 0 {
		if es, err = l.Since(ctx, seq-1, 1); err != nil {
			return audit.Entry{}, err
		}
	}
	if len(es) == 0 || es[0].Seq != seq {
		return audit.Entry{}, fmt.Errorf("%w: the audit log has no entry #%d", ErrNotFound, seq)
	}
	call := es[0]
	if call.Kind != vocab.KindCallInterrupted {
		return audit.Entry{}, fmt.Errorf("%w (#%d is %s)", ErrNotInterrupted, seq, call.Kind)
	}
	if call.RequestID != "" {
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
	rec := audit.Entry{Kind: vocab.KindCallReconciled, Agent: call.Agent, Tool: call.Tool, ArgsSHA256: call.ArgsSHA256,
		Reason: f.String(), InterruptedSeq: seq}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO approval_reconciled_calls (interrupted_seq, ran, found_by, note, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (interrupted_seq) DO NOTHING`, seq, f.Ran, f.By, f.Note, s.now().UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w (#%d)", ErrReconciled, seq)
		}
		return s.enqueue(ctx, tx, "", rec)
	})
	if err != nil {
		return audit.Entry{}, err
	}
	if err := s.flush(ctx, false); err != nil {
		return audit.Entry{}, err
	}
	return rec, nil
}

// UnreconciledCalls returns, oldest first, the call.interrupted entries
// of calls without a request that nobody has reconciled yet. (Those of
// requests are Unreconciled's.)
func (s *Service) UnreconciledCalls(ctx context.Context) ([]audit.Entry, error) {
	l, err := s.callLog()
	if err != nil {
		return nil, err
	}
	es, err := l.Interrupted(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT interrupted_seq FROM approval_reconciled_calls`)
	if err != nil {
		return nil, err
	}
	done := map[int64]bool{}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return nil, err
		}
		done[seq] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		if e.RequestID == "" && !done[e.Seq] {
			out = append(out, e)
		}
	}
	return out, nil
}
