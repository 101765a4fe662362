package guard

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard/routine"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/fulldisk"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// A routine call that ran while its outcome could not be recorded (the
// disk was full): the agent is told its result is withheld, and the
// running process records the outcome, once, as soon as the log takes it
// again, not at the next start; meanwhile it retries with back-off,
// one log line per step.
func TestAnOutcomeTheLogCouldNotTakeIsRecordedOnceItCan(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	var logged syncBuffer
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, History: f.log, Tools: map[string]config.Tool{"pay": {}},
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	t.Cleanup(g.Close)
	f.log.mu.Lock()
	f.log.failKind = vocab.KindCallExecuted
	f.log.mu.Unlock()

	res := g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}})
	if !res.IsError || !strings.Contains(text(res), "withheld") {
		t.Fatalf("result while the outcome cannot be recorded: %q", text(res))
	}
	time.Sleep(2 * time.Second) // the log stays full a while
	if n := logged.count("backing off"); n == 0 || n > 6 {
		t.Fatalf("%d back-off lines in 2 s (100 ms doubling: at most 5 steps), want one per step", n)
	}
	if got := f.log.kinds(); len(got) != 1 || got[0] != vocab.KindCallAllowed {
		t.Fatalf("log while full: %v, want only call.allowed", got)
	}

	f.log.mu.Lock()
	f.log.failKind = ""
	f.log.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for len(f.log.kinds()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the outcome was never recorded once the log took writes: %v", f.log.kinds())
		}
		time.Sleep(20 * time.Millisecond)
	}
	allowed, e := f.log.last(vocab.KindCallAllowed), f.log.last(vocab.KindCallExecuted)
	if e.ArgsSeq != allowed.Seq || !strings.Contains(e.Reason, routine.NoteLate) {
		t.Fatalf("late outcome %+v, want call.executed of the call allowed at %d saying it was recorded late", e, allowed.Seq)
	}
	f.tool.mu.Lock()
	runs := f.tool.runs
	f.tool.mu.Unlock()
	if runs != 1 {
		t.Fatalf("the tool ran %d times, want once", runs)
	}
	if m, ok := g.routine.SafeMark(); !ok || m < e.Seq {
		t.Errorf("mark %d (%v) once the outcome is recorded, want %d", m, ok, e.Seq)
	}
	time.Sleep(300 * time.Millisecond)
	if got := f.log.kinds(); len(got) != 2 {
		t.Errorf("log %v, want one outcome", got)
	}
}

// An approved request's run that took effect while its outcome could not
// be stored (the database's disk filled up as it ran) is stored by the
// running process once the disk has room, not at the next start.
func TestAnApprovedRunsOutcomeIsStoredOnceTheDatabaseTakesIt(t *testing.T) {
	ctx := context.Background()
	disk := fulldisk.Mount(t, 32<<20)
	db, err := store.Connect(ctx, filepath.Join(disk.Dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := newWorldOn(t, db)
	fill := w.book.spec("fill")
	run := fill.Run
	fill.Run = func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
		res, err := run(ctx, call) // took effect
		disk.Fill(t)
		return res, err
	}
	if err := w.cat.Replace("test", []*tools.Spec{fill}); err != nil {
		t.Fatal(err)
	}
	p := w.start()
	if err := p.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	id := w.raise(p, "fill", map[string]any{"note": "paid"})
	w.approve(p, id)
	deadline := time.Now().Add(30 * time.Second)
	for w.book.count() == 0 || disk.Free(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the approved request never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // its outcome fails to be stored meanwhile
	if r, err := p.svc.Get(ctx, id); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("request while its outcome cannot be stored: %v, %v", r.State, err)
	}

	disk.Release(t)
	w.waitState(p, id, vocab.StateExecuted)
	w.waitKinds(id, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
	if e := w.log.last(vocab.KindCallExecuted); !strings.Contains(e.Reason, routine.NoteLate) {
		t.Errorf("call.executed stored late does not say so: %q", e.Reason)
	}
	if w.book.count() != 1 {
		t.Fatalf("ran %d times, want once", w.book.count())
	}
}
