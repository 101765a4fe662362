// Package reconcile keeps what people found out about interrupted calls.
//
// A call whose run was interrupted (outcome unknown) may have acted or
// not; only a person can find out, by looking at the system it acted on.
// A finding is recorded once: for a call with an approval request, by the
// request's id; for one without (a routine call, or one a standing grant
// let through), by the seq of its call.interrupted entry, since the log is
// the only record of it and a seq names one entry for good. The primary
// keys make a second finding fail in the transaction that would record it.
//
// Package approval records each finding in the audit log (call.reconciled)
// in the same transaction as it is stored here.
package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/vocab"
)

// Errors of findings.
var (
	ErrNotInterrupted = errors.New("approval: the request's call was not interrupted; only an unknown outcome can be reconciled")
	ErrReconciled     = errors.New("approval: the call was already reconciled; a finding is recorded once")
)

// maxText bounds the who and the note a person gives: they go into the
// signed log.
const maxText = 500

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

// Bounded is the finding trimmed and bounded for the log.
func (f Finding) Bounded() Finding {
	f.By = authzdetails.Clean(strings.TrimSpace(f.By), maxText)
	f.Note = authzdetails.Clean(strings.TrimSpace(f.Note), maxText)
	return f
}

// Migrate creates the findings' tables if needed.
func Migrate(ctx context.Context, db *store.DB) error {
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS approval_reconciled (
			request_id TEXT PRIMARY KEY REFERENCES approval_requests(id),
			ran INTEGER NOT NULL,
			found_by TEXT NOT NULL,
			note TEXT NOT NULL,
			created_at INTEGER NOT NULL
		)`,
		// The findings about calls without a request, by the seq of
		// their call.interrupted.
		`CREATE TABLE IF NOT EXISTS approval_reconciled_calls (
			interrupted_seq INTEGER PRIMARY KEY,
			ran INTEGER NOT NULL,
			found_by TEXT NOT NULL,
			note TEXT NOT NULL,
			created_at INTEGER NOT NULL
		)`,
	} {
		if err := db.CreateTables(ctx, stmt); err != nil {
			return fmt.Errorf("approval: create tables: %w", err)
		}
	}
	return nil
}

// PutRequest stores the finding about request id's call inside tx;
// ErrReconciled if it has one.
func PutRequest(ctx context.Context, tx *sql.Tx, id string, f Finding, now time.Time) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO approval_reconciled (request_id, ran, found_by, note, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING`, id, f.Ran, f.By, f.Note, now.UnixNano())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrReconciled
	}
	return nil
}

// PutCall stores the finding about the call whose call.interrupted entry
// is at seq inside tx; ErrReconciled if it has one.
func PutCall(ctx context.Context, tx *sql.Tx, seq int64, f Finding, now time.Time) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO approval_reconciled_calls (interrupted_seq, ran, found_by, note, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (interrupted_seq) DO NOTHING`, seq, f.Ran, f.By, f.Note, now.UnixNano())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w (#%d)", ErrReconciled, seq)
	}
	return nil
}

// calls returns the seqs of the call.interrupted entries that have a
// finding.
func calls(ctx context.Context, db *store.DB) (map[int64]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT interrupted_seq FROM approval_reconciled_calls`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := map[int64]bool{}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		done[seq] = true
	}
	return done, rows.Err()
}

// Log is the part of *audit.Log that reconciling a call without a request
// reads: the call's own entry, and the interrupted calls.
type Log interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
	Interrupted(ctx context.Context) ([]audit.Entry, error)
}

// Outbox is where a finding's call.reconciled entry goes: approval's
// outbox, which writes it in the finding's own transaction, then appends
// it to the log.
type Outbox interface {
	InTx(ctx context.Context, fn func(tx *sql.Tx) error) error
	Enqueue(ctx context.Context, tx *sql.Tx, e audit.Entry) error
	Flush(ctx context.Context) error
}

// ErrNoEntry: the audit log has no entry at that seq.
var ErrNoEntry = errors.New("approval: no such entry")

// Interrupted returns the call.interrupted entry at seq; ErrNoEntry if
// there is no entry, ErrNotInterrupted if it is of another kind.
func Interrupted(ctx context.Context, l Log, seq int64) (audit.Entry, error) {
	var es []audit.Entry
	if seq > 0 {
		var err error
		if es, err = l.Since(ctx, seq-1, 1); err != nil {
			return audit.Entry{}, err
		}
	}
	if len(es) == 0 || es[0].Seq != seq {
		return audit.Entry{}, ErrNoEntry
	}
	if es[0].Kind != vocab.KindCallInterrupted {
		return audit.Entry{}, fmt.Errorf("%w (#%d is %s)", ErrNotInterrupted, seq, es[0].Kind)
	}
	return es[0], nil
}

// RecordCall stores finding f about call, the call.interrupted entry of a
// call without a request, and records call.reconciled in the same
// transaction; it returns that entry.
func RecordCall(ctx context.Context, out Outbox, call audit.Entry, f Finding, now time.Time) (audit.Entry, error) {
	rec := audit.Entry{Kind: vocab.KindCallReconciled, Agent: call.Agent, Tool: call.Tool, ArgsSHA256: call.ArgsSHA256,
		Reason: f.String(), InterruptedSeq: call.Seq}
	err := out.InTx(ctx, func(tx *sql.Tx) error {
		if err := PutCall(ctx, tx, call.Seq, f, now); err != nil {
			return err
		}
		return out.Enqueue(ctx, tx, rec)
	})
	if err != nil {
		return audit.Entry{}, err
	}
	if err := out.Flush(ctx); err != nil {
		return audit.Entry{}, err
	}
	return rec, nil
}

// UnreconciledCalls returns, oldest first, the call.interrupted entries of
// calls without a request that nobody has reconciled yet.
func UnreconciledCalls(ctx context.Context, db *store.DB, l Log) ([]audit.Entry, error) {
	es, err := l.Interrupted(ctx)
	if err != nil {
		return nil, err
	}
	done, err := calls(ctx, db)
	if err != nil {
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
