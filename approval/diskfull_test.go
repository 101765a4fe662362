package approval

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/fulldisk"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// lockedBuffer is a log sink the service's goroutines write while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// A request whose expiry cannot be written (the database's disk is
// full): its waiter hears at once that it expired unrecorded, instead of
// retrying the write in a loop (one request once made 154,586 error lines);
// the expiry loop backs off, logging once per step; and once the disk has
// room again the expiry is recorded without anyone asking.
func TestAnExpiryThatCannotBeWrittenBacksOffAndIsRecordedOnceWritingWorks(t *testing.T) {
	storetest.SQLiteOnly(t, "fills the disk the SQLite file is on; PostgreSQL's is the database server's")
	disk := fulldisk.Mount(t, 16<<20)
	db := storetest.Connect(t, filepath.Join(disk.Dir, store.FileName))
	clock := approvaltest.NewClock(time.Now())
	var logged lockedBuffer
	f := fixtureOn(t, disk.Dir, db, func(o *Options) {
		o.Now = clock.Now
		o.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	ctx := context.Background()
	r, err := f.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}

	disk.Fill(t)
	clock.Add(2 * time.Minute) // past its expiry
	f.svc.watch.Notify(r.ID)
	_, err = f.svc.Wait(ctx, r.ID)
	if !errors.Is(err, ErrRecord) || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), "could not be recorded yet") {
		t.Fatalf("Wait on a request whose expiry cannot be written: %v, want ErrRecord saying it expired unrecorded", err)
	}
	if got, err := f.svc.Get(ctx, r.ID); err != nil || got.State != vocab.StatePending {
		t.Fatalf("request while its expiry cannot be written: %+v, %v (the row cannot change)", got, err)
	}
	// Changes keep coming (a waiter per second would wake the loop each
	// time); the loop's lines stay one per back-off step.
	const full = 3 * time.Second
	for end := time.Now().Add(full); time.Now().Before(end); {
		f.svc.watch.Notify(r.ID)
		time.Sleep(10 * time.Millisecond)
	}
	var backoffs int
	for _, l := range logged.lines() {
		if strings.Contains(l, "expiry loop cannot write") {
			backoffs++
		}
	}
	// 100 ms doubling: at most ~6 steps fit in 3 s; a loop per change
	// would log hundreds.
	if backoffs == 0 || backoffs > 8 {
		t.Fatalf("%d back-off lines in %v of a full disk, want one per step (1..8):\n%s", backoffs, full, strings.Join(logged.lines(), "\n"))
	}
	if n := len(logged.lines()); n > backoffs+4 {
		t.Errorf("%d log lines in %v of a full disk, %d of them back-off steps:\n%s", n, full, backoffs, strings.Join(logged.lines(), "\n"))
	}

	disk.Release(t)
	eventually(t, "the request expired", func() bool {
		got, err := f.svc.Get(ctx, r.ID)
		return err == nil && got.State == vocab.StateExpired
	})
	eventually(t, "the expiry recorded", func() bool { _, ok := f.rec.Last(vocab.KindApprovalExpired); return ok })
	eventually(t, "the loop saying it writes again", func() bool { return strings.Contains(strings.Join(logged.lines(), "\n"), "expiry loop writes again") })
}
