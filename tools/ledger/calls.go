package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/countersign/countersign/store"
)

// A transfer made by a server call carries that call's id (a column of
// ledger_transfers, unique), written in the transfer's own transaction. It
// makes the ledger the witness of its own side effects: a call pays at most
// once (paying again under the same call id returns the call's own
// transfer), and after a crash [Ledger.TransferByCall] tells whether a call
// that was running took effect, and with what result. The hot path writes
// nothing more than the column.

// migrateCalls adds call_id to a ledger created before it existed; the
// transfers already there have none.
func (l *Ledger) migrateCalls(ctx context.Context) error {
	return l.db.Migrate(ctx, "ledger", func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		// Databases made before schema_version may have it already.
		has, err := store.HasColumn(ctx, tx, d, "ledger_transfers", "call_id")
		if err != nil {
			return fmt.Errorf("read table layout: %w", err)
		}
		if !has {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE ledger_transfers ADD COLUMN call_id TEXT`); err != nil {
				return fmt.Errorf("add call_id column: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS ledger_transfers_call_id
			ON ledger_transfers (call_id) WHERE call_id IS NOT NULL`); err != nil {
			return fmt.Errorf("call_id index: %w", err)
		}
		return nil
	})
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
