package freeze

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A freeze holds its agent, and a freeze of all agents holds every agent
// unless it has its own; a second freeze of one agent is refused naming
// the first; every change moves the counter other processes poll; an
// agent's own freeze outlives the lifting of the freeze of all.
func TestFreezesHoldUntilLifted(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		r := NewReader(db)
		t.Cleanup(r.Close)
		inTx := func(fn func(tx *sql.Tx) error) error { return storetest.InTx(t, db, fn) }
		at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
		if f, err := r.Frozen(ctx, "bot"); f != nil || err != nil {
			t.Fatalf("before any freeze: %v, %v", f, err)
		}
		if err := inTx(func(tx *sql.Tx) error { return Put(ctx, tx, Freeze{Agent: "bot", By: "cli:ops", At: at}) }); err != nil {
			t.Fatal(err)
		}
		err := inTx(func(tx *sql.Tx) error { return Put(ctx, tx, Freeze{Agent: "bot", By: "alice", At: at.Add(time.Hour)}) })
		var fe *FrozenError
		if !errors.As(err, &fe) || !errors.Is(err, ErrAgentFrozen) || fe.Freeze.By != "cli:ops" {
			t.Fatalf("second freeze of bot: %v", err)
		}
		if err := inTx(func(tx *sql.Tx) error {
			return Put(ctx, tx, Freeze{Agent: AllAgents, By: "alice", At: at.Add(time.Minute)})
		}); err != nil {
			t.Fatal(err)
		}
		for agent, by := range map[string]string{"bot": "cli:ops", "other": "alice"} {
			f, err := r.Frozen(ctx, agent)
			if err != nil || f == nil || f.By != by {
				t.Fatalf("%s is held by %+v (%v), want a freeze by %s", agent, f, err, by)
			}
			if f2, _ := In(ctx, db, agent); f2 == nil || *f2 != *f {
				t.Fatalf("In and Frozen disagree on %s: %+v, %+v", agent, f2, f)
			}
		}
		if n, err := Changes(ctx, db); err != nil || n != 2 {
			t.Fatalf("changes %d, %v; want 2", n, err)
		}
		if err := inTx(func(tx *sql.Tx) error { return Lift(ctx, tx, AllAgents) }); err != nil {
			t.Fatal(err)
		}
		if err := inTx(func(tx *sql.Tx) error { return Lift(ctx, tx, "other") }); !errors.Is(err, ErrNotFrozen) {
			t.Fatalf("lifting a freeze nobody made: %v", err)
		}
		fs, err := List(ctx, db)
		if err != nil || len(fs) != 1 || fs[0].Agent != "bot" || !fs[0].At.Equal(at) {
			t.Fatalf("freezes in force %+v, %v; want bot's alone", fs, err)
		}
		if f, _ := r.Frozen(ctx, "other"); f != nil {
			t.Fatalf("other is still held by %+v", f)
		}
		if n, _ := Changes(ctx, db); n != 3 {
			t.Fatalf("changes %d after the lift, want 3", n)
		}
		for name, ok := range map[string]bool{"bot": true, AllAgents: true, "anonymous": true, "Bot": false, "": false, "a b": false} {
			if ValidAgent(name) != ok {
				t.Errorf("ValidAgent(%q) = %v", name, !ok)
			}
		}
	})
}

// Watch calls back on each freeze and unfreeze another process commits,
// calls again after a failed call, and returns when stopped.
func TestWatchCallsBackOnEachChange(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		seen := make(chan int64, 16)
		failed := false
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			Watch(db, stop, func(ctx context.Context) error {
				n, err := Changes(ctx, db)
				if err != nil {
					return err
				}
				seen <- n
				if !failed {
					failed = true
					return errors.New("cannot act on it yet")
				}
				return nil
			}, slog.New(slog.DiscardHandler))
		}()
		next := func(want int64) {
			t.Helper()
			select {
			case n := <-seen:
				if n != want {
					t.Fatalf("called back at change %d, want %d", n, want)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no call back for change %d", want)
			}
		}
		at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
		if err := storetest.InTx(t, db, func(tx *sql.Tx) error { return Put(ctx, tx, Freeze{Agent: "bot", By: "alice", At: at}) }); err != nil {
			t.Fatal(err)
		}
		next(1)
		next(1) // the failed call, again
		if err := storetest.InTx(t, db, func(tx *sql.Tx) error { return Lift(ctx, tx, "bot") }); err != nil {
			t.Fatal(err)
		}
		next(2)
		close(stop)
		<-done
		if len(seen) != 0 {
			t.Fatalf("%d more call backs than changes", len(seen))
		}
	})
}

// A call back that keeps failing (it writes, and the disk is full) is
// called again after a back-off, not at every poll: a handful of calls in
// two seconds, where polling would make ten.
func TestWatchBacksOffWhileTheCallBackFails(t *testing.T) {
	db := storetest.Connect(t, t.TempDir()+"/"+store.FileName)
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := storetest.InTx(t, db, func(tx *sql.Tx) error {
		return Put(ctx, tx, Freeze{Agent: "bot", By: "alice", At: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	calls := make(chan struct{}, 100)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		Watch(db, stop, func(context.Context) error {
			calls <- struct{}{}
			return errors.New("disk full")
		}, slog.New(slog.DiscardHandler))
	}()
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	// Pauses of 100-200, 200-400, 400-800, 800-1600 ms: at most 5 calls.
	if n := len(calls); n < 2 || n > 6 {
		t.Fatalf("%d call backs in 2 s of failures, want a back-off's few (2..6)", n)
	}
}
