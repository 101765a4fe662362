package approval

import (
	"context"
	"fmt"
)

// PendingCaps bound the requests waiting for a human (the guard's
// limits.pending_per_agent and limits.pending_total), so that one agent,
// or all of them, cannot bury the approvers' page. Create counts them in
// the transaction that stores the request: calls raising requests at
// once, on one replica or several, cannot all pass. Zero: no cap.
type PendingCaps struct {
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

// checkCaps refuses c when the requests already waiting fill one of its
// caps. Requests past their expiry that the expiry loop has not yet
// ended do not count. Each count reads an index only, and stops at its
// cap: raising a request costs no more with many waiting.
func (s *Service) checkCaps(ctx context.Context, q querier, c *creation) error {
	count := func(cap int, where string, args ...any) (n int, err error) {
		if cap > 0 {
			err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE state = 'pending' AND expires_at > ?`+where+` LIMIT ?) AS p`,
				append(append([]any{s.now().Unix()}, args...), cap)...).Scan(&n)
		}
		return n, err
	}
	mine, err := count(c.Caps.PerAgent, ` AND agent = ?`, c.Agent)
	all := 0
	if err == nil && (c.Caps.PerAgent <= 0 || mine < c.Caps.PerAgent) {
		all, err = count(c.Caps.Total, ``)
	}
	switch {
	case err != nil:
		return fmt.Errorf("count the requests waiting: %w", err)
	case c.Caps.PerAgent > 0 && mine >= c.Caps.PerAgent:
		return &CapError{Agent: c.Agent, Pending: mine, Max: c.Caps.PerAgent}
	case c.Caps.Total > 0 && all >= c.Caps.Total:
		return &CapError{Pending: all, Max: c.Caps.Total}
	}
	return nil
}

// PendingFor returns how many requests of agent wait for a decision and
// have not expired (what PendingCaps.PerAgent counts).
func (s *Service) PendingFor(ctx context.Context, agent string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM approval_requests WHERE state = 'pending' AND agent = ? AND expires_at > ?`,
		agent, s.now().Unix()).Scan(&n)
	return n, err
}
