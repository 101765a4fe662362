package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/countersign/countersign/audit"
)

// A request whose run was interrupted (outcome unknown) may have acted or
// not; only a person can find out, by looking at the system it acted on.
// Reconcile records what they found: a call.reconciled entry, and the
// finding added to the request's reason, where the page, approval_status
// and tasks/get show it. It changes nothing else: the request stays
// interrupted and never runs again, and a finding is recorded once.

// Errors of Reconcile.
var (
	ErrNotInterrupted = errors.New("approval: the request's call was not interrupted; only an unknown outcome can be reconciled")
	ErrReconciled     = errors.New("approval: the request was already reconciled")
)

const createReconciled = `CREATE TABLE IF NOT EXISTS approval_reconciled (
	request_id TEXT PRIMARY KEY REFERENCES approval_requests(id),
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

// Reconcile records a person's finding about request id, whose call was
// interrupted. A request in any other state is ErrNotInterrupted; a second
// finding is ErrReconciled.
func (s *Service) Reconcile(ctx context.Context, id string, f Finding) (*Request, error) {
	f.By = clean(strings.TrimSpace(f.By), maxReconcileText)
	f.Note = clean(strings.TrimSpace(f.Note), maxReconcileText)
	if f.By == "" {
		return nil, fmt.Errorf("%w: who found out is required", ErrInvalidRequest)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		if r.State != StateInterrupted {
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
		return s.enqueue(ctx, tx, id, s.requestEntry(r, audit.KindCallReconciled, text))
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
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests WHERE state = ?
		AND NOT EXISTS (SELECT 1 FROM approval_reconciled c WHERE c.request_id = approval_requests.id)
		ORDER BY decided_at, id`, StateInterrupted)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]*Request, 0, len(ids))
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
