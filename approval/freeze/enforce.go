package freeze

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/countersign/countersign/store"
)

// A freeze ends what it holds: the agent's pending requests are
// cancelled and its standing grants revoked. Which ones, and in what
// order, is decided here; ending each one and recording it is the
// approval service's, whose tables and outbox they are (Ender).
//
// A process ends only what it can order in the log after the entries
// that raised it: a request or grant with another owner's entries still
// in the outbox is left to that owner, which ends it when it next
// enforces the freezes in force (Enforce), as it does whenever one is
// committed anywhere (Watch).

// Ender ends, inside tx and with its audit entry, one thing a freeze
// holds; package approval implements it. Each returns false when the
// thing was ended already.
type Ender interface {
	// Owner is this process's outbox owner.
	Owner() string
	CancelRequest(ctx context.Context, tx *sql.Tx, id, reason string, now time.Time) (bool, error)
	RevokeGrant(ctx context.Context, tx *sql.Tx, id, by, reason string, now time.Time) (bool, error)
}

// Stop ends, inside tx, the pending requests and the grants in force
// that f holds and this process may end, and returns their ids.
func Stop(ctx context.Context, tx *sql.Tx, f Freeze, now time.Time, e Ender) (cancelled, revoked []string, err error) {
	who := "agent " + f.Agent
	if f.Agent == AllAgents {
		who = "all agents"
	}
	reason := fmt.Sprintf("%s frozen by %s", who, f.By)
	ids, err := column(ctx, tx, `SELECT id FROM approval_requests r WHERE state = 'pending' AND (agent = ? OR ? = '*')
		AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = r.id AND o.owner <> ?) ORDER BY created_at`, f.Agent, f.Agent, e.Owner())
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		if ok, err := e.CancelRequest(ctx, tx, id, reason, now); err != nil {
			return nil, nil, err
		} else if ok {
			cancelled = append(cancelled, id)
		}
	}
	ids, err = column(ctx, tx, `SELECT id FROM approval_grants g WHERE (g.agent = ? OR ? = '*') AND g.revoked_at = 0 AND g.used < g.max_calls AND g.expires_at > ?
		AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = g.request_id AND o.owner <> ?) ORDER BY g.created_at`,
		f.Agent, f.Agent, now.Unix(), e.Owner())
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		if ok, err := e.RevokeGrant(ctx, tx, id, f.By, reason, now); err != nil {
			return nil, nil, err
		} else if ok {
			revoked = append(revoked, id)
		}
	}
	return cancelled, revoked, nil
}

// Enforce ends what the freezes in force hold and their own transactions
// left to this process (see Stop), one transaction per freeze, and
// returns how many requests and grants it ended.
func Enforce(ctx context.Context, db *store.DB, now func() time.Time, e Ender) (int, error) {
	fs, err := List(ctx, db)
	if err != nil {
		return 0, err
	}
	ended := 0
	for _, f := range fs {
		// The count is the last run's: on PostgreSQL the closure may run
		// again, and only the run that commits ended anything.
		var n int
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			c, r, err := Stop(ctx, tx, f, now(), e)
			n = len(c) + len(r)
			return err
		})
		if err != nil {
			return ended, err
		}
		ended += n
	}
	return ended, nil
}

func column(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
