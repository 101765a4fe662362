package approval

import (
	"context"
	"time"

	"github.com/countersign/countersign/approval/sealed"
)

// The result of an approved call is kept in approval_requests.result,
// sealed (package sealed), for Options.ResultTTL after its run ended for
// the agent to collect, and then erased.

// resultSweep is how often results past their window are erased.
const resultSweep = 30 * time.Second

// sweepResults erases, every resultSweep until ctx ends, the results
// whose window ended. It runs where this replica leads the sweeps
// (sweeps.go).
func (s *Service) sweepResults(ctx context.Context) {
	t := time.NewTicker(resultSweep)
	defer t.Stop()
	for {
		if _, err := s.EraseResults(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("approval: result sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// EraseResults erases every stored result whose collection window has
// ended (sealed.Erase) and returns how many. The sweep calls it; so may a
// test.
func (s *Service) EraseResults(ctx context.Context) (int, error) {
	return sealed.Erase(ctx, s.db, s.now())
}
