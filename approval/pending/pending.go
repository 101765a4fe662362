// Package pending keeps how many approval requests wait for a human, per
// agent and in all, as counters changed in the transaction of every
// request's change of state, so that the pending caps are checked by
// reading one row each, however many wait.
//
// A request counts from the transaction that stores it to the one that
// ends it (decided, expired, cancelled): one past its expiry counts until
// the expiry sweep ends it, which makes the caps stricter for that while,
// never looser.
package pending

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/countersign/countersign/store"
)

// Schema is the counters' table: one row per agent with requests
// waiting ("agent:" and its name), and the total ("total").
const Schema = `CREATE TABLE IF NOT EXISTS approval_pending (
	scope TEXT PRIMARY KEY,
	n INTEGER NOT NULL
)`

const total = "total"

// Agents is a query of the agents with requests waiting, one row each
// read from its counter, for another package's query (a UNION) to take
// them without walking every pending request.
const Agents = `SELECT substr(scope, 7) FROM approval_pending WHERE scope LIKE 'agent:%'`

func agentScope(agent string) string { return "agent:" + agent }

// Caps bound the requests waiting for a human (the guard's
// limits.pending_per_agent and limits.pending_total), so that one agent,
// or all of them, cannot bury the approvers' page. Zero: no cap.
type Caps struct {
	PerAgent int // of the request's agent
	Total    int // of every agent together
}

// CapError is the pending cap that refused to store a request.
type CapError struct {
	Agent   string // whose cap it is; "" for the total
	Pending int    // requests waiting when it refused
	Max     int
}

func (e *CapError) Error() string {
	if e.Agent == "" {
		return fmt.Sprintf("approval: %d requests are waiting for a human, the most allowed is %d", e.Pending, e.Max)
	}
	return fmt.Sprintf("approval: agent %s has %d requests waiting for a human, the most allowed is %d", e.Agent, e.Pending, e.Max)
}

// Raised counts a request of agent stored in tx, or refuses it with a
// *CapError when it would pass caps; tx must then be rolled back, which
// takes the count back. Each counter is one row changed in place: two
// transactions raising at once, on one replica or several, cannot both
// see room for one (on PostgreSQL the second conflicts and is re-run).
func Raised(ctx context.Context, tx *sql.Tx, agent string, caps Caps) error {
	for _, c := range []struct {
		scope, agent string
		max          int
	}{{agentScope(agent), agent, caps.PerAgent}, {total, "", caps.Total}} {
		var n int
		err := tx.QueryRowContext(ctx, `INSERT INTO approval_pending (scope, n) VALUES (?, 1)
			ON CONFLICT (scope) DO UPDATE SET n = approval_pending.n + 1 RETURNING n`, c.scope).Scan(&n)
		switch {
		case err != nil:
			return fmt.Errorf("count the requests waiting: %w", err)
		case c.max > 0 && n > c.max:
			return &CapError{Agent: c.agent, Pending: n - 1, Max: c.max}
		}
	}
	return nil
}

// Ended uncounts request id, which tx has just moved out of pending.
func Ended(ctx context.Context, tx *sql.Tx, id string) error {
	var agent string
	if err := tx.QueryRowContext(ctx, `SELECT agent FROM approval_requests WHERE id = ?`, id).Scan(&agent); err != nil {
		return fmt.Errorf("uncount request %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE approval_pending SET n = n - 1 WHERE scope IN (?, ?)`, agentScope(agent), total); err != nil {
		return fmt.Errorf("uncount request %s: %w", id, err)
	}
	// An agent's row goes when its last request does: the table keeps
	// only agents with something waiting.
	_, err := tx.ExecContext(ctx, `DELETE FROM approval_pending WHERE scope = ? AND n <= 0`, agentScope(agent))
	return err
}

// Querier is what Count reads through (a *sql.DB, *sql.Tx, *store.DB).
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Count returns the counter of agent's requests, or of all when agent is
// "": what the caps compare with.
func Count(ctx context.Context, q Querier, agent string) (int, error) {
	scope := total
	if agent != "" {
		scope = agentScope(agent)
	}
	var n int
	err := q.QueryRowContext(ctx, `SELECT n FROM approval_pending WHERE scope = ?`, scope).Scan(&n)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return n, err
}

// Recount sets the counters from the requests stored as pending: the
// migration (store.Migration) that starts them on a database made before
// them.
func Recount(ctx context.Context, tx *sql.Tx, _ store.Dialect) error {
	for _, stmt := range []string{
		`DELETE FROM approval_pending`,
		`INSERT INTO approval_pending (scope, n)
			SELECT 'agent:' || agent, COUNT(*) FROM approval_requests WHERE state = 'pending' GROUP BY agent`,
		`INSERT INTO approval_pending (scope, n)
			SELECT 'total', COUNT(*) FROM approval_requests WHERE state = 'pending'`,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("recount the requests waiting: %w", err)
		}
	}
	return nil
}
