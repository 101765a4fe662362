package approval

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// clock is a time both replicas of a test read and the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// eventually polls cond until it holds, failing the test after a while.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two replicas on one PostgreSQL database: only the one leading the
// sweeps expires requests nobody decided, whichever replica created
// them, and when it goes the other takes the sweeps over.
func TestSweepsRunOnTheLeaderOnly(t *testing.T) {
	url := pgtest.URL(t)
	dir := t.TempDir()
	c := &clock{t: time.Now()}
	now := func(o *Options) { o.Now = c.Now }
	a := fixtureOn(t, dir, storetest.Connect(t, url), now)
	if a.db.Dialect() != store.PostgreSQL {
		t.Fatalf("dialect %v", a.db.Dialect())
	}
	eventually(t, "A leads the sweeps", a.svc.leadingSweeps.Load)
	b := fixtureOn(t, dir, storetest.Connect(t, url), now)
	ctx := context.Background()

	expired := func(id string) func() bool {
		return func() bool {
			r, err := b.svc.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return r.State == vocab.StateExpired
		}
	}
	r1, err := b.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute)
	eventually(t, "the request B created expires", expired(r1.ID))
	// The loop counts an expiry once its entry is appended, after the
	// state changed.
	eventually(t, "a sweep counts the expiry", func() bool { return a.svc.expiredBySweep.Load()+b.svc.expiredBySweep.Load() == 1 })
	if b.svc.leadingSweeps.Load() {
		t.Fatal("B leads the sweeps too")
	}
	if n, m := a.svc.expiredBySweep.Load(), b.svc.expiredBySweep.Load(); n != 1 || m != 0 {
		t.Fatalf("expired by A's sweep %d, by B's %d; want 1 and 0", n, m)
	}

	a.svc.Close() // its leadership ends with it
	eventually(t, "B leads the sweeps once A is gone", b.svc.leadingSweeps.Load)
	r2, err := b.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute)
	eventually(t, "the second request expires", expired(r2.ID))
	eventually(t, "a sweep counts the expiry", func() bool { return a.svc.expiredBySweep.Load()+b.svc.expiredBySweep.Load() == 2 })
	if n, m := a.svc.expiredBySweep.Load(), b.svc.expiredBySweep.Load(); n != 1 || m != 1 {
		t.Fatalf("expired by A's sweep %d, by B's %d; want 1 and 1", n, m)
	}
}
