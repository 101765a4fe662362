package approval

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Each waiter wakes at its own request's change, well before the re-read
// that only catches other processes' decisions, and nothing is left
// behind once the requests end.
func TestWaitersWakeAtTheirOwnRequestAndLeaveNothing(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		const n = 20
		ids := make([]string, n)
		for i := range ids {
			r, err := f.svc.Create(ctx, paymentRequest("alice", "bob"))
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = r.ID
		}
		ended := make(chan *Request, n)
		for _, id := range ids {
			go func() {
				r, err := f.svc.Wait(ctx, id)
				if err != nil {
					t.Error(err)
				}
				ended <- r
			}()
		}
		// Let the waiters reach their wait before the changes come.
		deadline := time.Now().Add(rereadEvery / 2)
		for {
			watching := f.svc.watch.Watched()
			if watching == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d waiters watching", watching, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		start := time.Now()
		for _, id := range ids {
			if err := f.svc.Cancel(ctx, id, "test"); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			r := <-ended
			if r == nil || r.State != vocab.StateCancelled {
				t.Fatalf("waiter returned %+v", r)
			}
		}
		if took := time.Since(start); took >= rereadEvery {
			t.Fatalf("waiters took %s: they were not woken by their request's change", took)
		}
		left := f.svc.watch.Watched()
		if left != 0 {
			t.Fatalf("%d watched requests left after every request ended", left)
		}
	})
}
