package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A transfer made by a server call carries that call's id (a column of
// ledger_transfers, unique), written in the transfer's own transaction. It
// makes the ledger the witness of its own side effects:
//
//   - a call pays at most once: paying again under the same call id
//     returns the call's own transfer;
//   - after a crash, [Ledger.TransferByCall] tells whether a call that was
//     running took effect, and with what result;
//   - [Ledger.CallTransfers] lists the transfers after a position in commit
//     order, so that a start can find every transfer whose audit record the
//     crash lost. The position up to which every transfer is known to be
//     recorded is kept in ledger_marks ([Ledger.Recorded]), so that scan
//     costs little; the hot path writes nothing more than the column.

const callsSchema = `
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transfers_call_id ON ledger_transfers (call_id) WHERE call_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger_marks (
	name TEXT PRIMARY KEY,
	seq  INTEGER NOT NULL
) STRICT;
`

// recordedMark names the ledger_marks row of [Ledger.Recorded].
const recordedMark = "recorded"

// migrateCalls adds call_id to a ledger created before it existed. The
// transfers already there have no call id; the recorded mark starts after
// them, since nothing can be reconciled for them.
func (l *Ledger) migrateCalls(ctx context.Context) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM pragma_table_info('ledger_transfers') WHERE name = 'call_id'`).Scan(&n); err != nil {
		return fmt.Errorf("read table layout: %w", err)
	}
	if n == 0 {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE ledger_transfers ADD COLUMN call_id TEXT`); err != nil {
			return fmt.Errorf("add call_id column: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, callsSchema); err != nil {
		return fmt.Errorf("create call tables: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO ledger_marks (name, seq)
		SELECT ?, COALESCE(MAX(seq), 0) FROM ledger_transfers`, recordedMark); err != nil {
		return fmt.Errorf("recorded mark: %w", err)
	}
	return tx.Commit()
}

// TransferByCall returns the transfer the call made; ok is false when it
// made none.
func (l *Ledger) TransferByCall(ctx context.Context, callID string) (t Transfer, ok bool, err error) {
	if callID == "" {
		return t, false, errors.New("ledger: empty call id")
	}
	t, err = scanTransfer(l.db.QueryRowContext(ctx,
		`SELECT `+transferColumns+` FROM ledger_transfers WHERE call_id = ?`, callID))
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("ledger: %w", err)
	}
	return t, true, nil
}

// CallTransfer is a transfer with its position in commit order.
type CallTransfer struct {
	Seq int64
	Transfer
}

// CallTransfers returns up to limit transfers made by calls, after
// position seq, in commit order.
func (l *Ledger) CallTransfers(ctx context.Context, seq int64, limit int) ([]CallTransfer, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT seq, `+transferColumns+` FROM ledger_transfers
		WHERE seq > ? AND call_id IS NOT NULL ORDER BY seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []CallTransfer
	for rows.Next() {
		var ct CallTransfer
		var at string
		t := &ct.Transfer
		if err := rows.Scan(&ct.Seq, &t.ID, &at, &t.From, &t.To, &t.Currency, &t.Amount, &t.Memo, &t.IdempotencyKey,
			&t.BalanceAfter, &t.NewPayee, &t.CallID); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		var err error
		if t.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("ledger: transfer %s: time: %w", t.ID, err)
		}
		out = append(out, ct)
	}
	return out, rows.Err()
}

// LastSeq is the position of the newest transfer, 0 when there is none.
func (l *Ledger) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM ledger_transfers`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	return seq, nil
}

// Recorded is the position up to which every transfer is known to have its
// audit record.
func (l *Ledger) Recorded(ctx context.Context) (int64, error) {
	var seq int64
	if err := l.db.QueryRowContext(ctx, `SELECT seq FROM ledger_marks WHERE name = ?`, recordedMark).Scan(&seq); err != nil {
		return 0, fmt.Errorf("ledger: recorded mark: %w", err)
	}
	return seq, nil
}

// SetRecorded moves the recorded mark forward to seq; it never moves back.
func (l *Ledger) SetRecorded(ctx context.Context, seq int64) error {
	if _, err := l.db.ExecContext(ctx, `UPDATE ledger_marks SET seq = MAX(seq, ?) WHERE name = ?`, seq, recordedMark); err != nil {
		return fmt.Errorf("ledger: recorded mark: %w", err)
	}
	return nil
}
