package approval

import (
	"context"
	"fmt"
)

// Detach turns block-mode request id into a poll-mode one: its caller
// stopped holding its call open (approval.block_for passed) and was told
// to collect the outcome with approval_status. From now on it is what a
// poll-mode request is: a restart or a reaping replica resumes it instead
// of cancelling it, and the server runs it once approved. A request
// already in another mode is left as it is.
func (s *Service) Detach(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET wait_mode = ? WHERE id = ? AND wait_mode = ?`,
		WaitPoll, id, WaitBlock); err != nil {
		return fmt.Errorf("approval: detach %s: %w", id, err)
	}
	return nil
}
