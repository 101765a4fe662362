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

// sweepResults erases, every resultSweep, the results whose window ended.
func (s *Service) sweepResults(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(resultSweep)
	defer t.Stop()
	for {
		if _, err := s.EraseResults(context.Background()); err != nil {
			s.opts.Logger.Warn("approval: result sweep", "err", err)
		}
		select {
		case <-stop:
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
