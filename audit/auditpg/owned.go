package auditpg

import (
	"context"
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
