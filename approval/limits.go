package approval

import (
	"context"

	"github.com/countersign/countersign/approval/pending"
)

// PendingCaps bound the requests waiting for a human; Create counts them
// in the transaction that stores the request (package pending).
type PendingCaps = pending.Caps

// CapError is the pending cap that refused to store a request.
type CapError = pending.CapError

// PendingFor returns how many requests of agent wait for a decision and
// have not expired (what PendingCaps.PerAgent counts).
func (s *Service) PendingFor(ctx context.Context, agent string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM approval_requests WHERE state = 'pending' AND agent = ? AND expires_at > ?`,
		agent, s.now().Unix()).Scan(&n)
	return n, err
}
