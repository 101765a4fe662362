package approval

import (
	"context"
	"sync"

	"github.com/countersign/countersign/store"
)

// sweepLeadership names the leadership (store's Lead) under which one
// replica at a time runs the chores on rows all replicas share: erasing
// results past their window (results.go), deleting expired ceremonies
// (ceremony.Sweep) and expiring pending requests nobody decided
// (expiryLoop). Run on every replica they would only multiply the load,
// and replicas expiring the same request would race for its entry. When
// the leader dies its lock goes with its connection and another replica
// takes the chores over; until then a request past its time stays pending
// a moment longer, but no decision can land on it (the checks read
// expires_at) and a waiter expires its own request itself (Await).
// On SQLite this process always leads.
//
// What stays on every replica concerns this process: the outbox it
// appends, the waiters it wakes, the freezes it applies.
const sweepLeadership = "approval sweeps"

// startSweeps runs the sweeps whenever this replica leads them, until
// Close.
func (s *Service) startSweeps(ctx context.Context) {
	pg := s.db.Dialect() == store.PostgreSQL
	s.leadingSweeps.Store(!pg) // before the first expiry loop round
	ctx, s.stopSweeps = context.WithCancel(context.WithoutCancel(ctx))
	s.sweepsDone = make(chan struct{})
	go func() {
		defer close(s.sweepsDone)
		s.db.Lead(ctx, sweepLeadership, func(ctx context.Context) {
			s.leadingSweeps.Store(true)
			var wg sync.WaitGroup
			wg.Go(func() { s.sweepResults(ctx) })
			wg.Go(func() { s.keys.Sweep(ctx) })
			wg.Wait()
			if pg {
				s.leadingSweeps.Store(false)
			}
		})
	}()
}
