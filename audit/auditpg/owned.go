package auditpg

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/countersign/countersign/store"
)

// Owned tells which entries each replica appended (the owner column), so
// that the reaper can settle a dead replica's routine calls and no one
// else's (guard's Owned).
type Owned struct{ DB *store.DB }

// Owned returns the seqs after seq of the entries owner appended, in order.
func (o Owned) Owned(ctx context.Context, owner string, after int64) ([]int64, error) {
	rows, err := o.DB.QueryContext(ctx, `SELECT seq FROM audit_entries WHERE owner = ? AND seq > ? ORDER BY seq`, owner, after)
	if err != nil {
		return nil, fmt.Errorf("auditpg: entries of %s: %w", owner, err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, fmt.Errorf("auditpg: entries of %s: %w", owner, err)
		}
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("auditpg: entries of %s: %w", owner, err)
	}
	return seqs, nil
}

// ForgetMark is the part of forgetting an owner (store.Owners.AlsoForget)
// that deletes the mark named name(owner) kept over its entries (such as
// guard.RoutineMark), in the same transaction, once the owner appended
// nothing after it: what it left is settled. Until then the owner's row
// and its mark stay for a later pass.
func (o Owned) ForgetMark(name func(owner string) string) store.ForgetCheck {
	return func(ctx context.Context, tx *sql.Tx, owner string) (bool, error) {
		return store.Marks{DB: o.DB}.ForgetIn(ctx, tx, name(owner), func(mark int64) (bool, error) {
			var left bool
			err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM audit_entries WHERE owner = ? AND seq > ?)`, owner, mark).Scan(&left)
			if err != nil {
				return false, fmt.Errorf("auditpg: entries of %s: %w", owner, err)
			}
			return !left, nil
		})
	}
}
