package approval

import "context"

// PendingFor returns how many requests of agent wait for a decision; the
// guard caps it (limits.pending_per_agent) so that one agent cannot bury
// the approvers' page. Requests past their expiry that the expiry loop has
// not yet ended do not count.
func (s *Service) PendingFor(ctx context.Context, agent string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM approval_requests WHERE state = 'pending' AND agent = ? AND expires_at > ?`,
		agent, s.now().Unix()).Scan(&n)
	return n, err
}
