package guard

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard/routine"
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
