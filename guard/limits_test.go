package guard

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// Refusals over the call rate are tallied: the first is recorded at once,
// the rest of the minute in the next entry, and what is left when the guard
// closes is recorded then.
func TestRateLimitedEntriesCarryTheCount(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Now: clock,
		Limits: Limits{CallsPerSecond: 1, CallBurst: 1}, Tools: map[string]config.Tool{"pay": {}}})
	call := func() bool {
		res := g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}})
		return !res.IsError
	}
	count := func() (n int, reasons []string) {
		f.log.mu.Lock()
		defer f.log.mu.Unlock()
		for _, e := range f.log.entries {
			if e.Kind == vocab.KindCallRateLimited {
				n++
				reasons = append(reasons, e.Reason)
			}
		}
		return n, reasons
	}
	if !call() {
		t.Fatal("first call refused")
	}
	for range 10 {
		if call() {
			t.Fatal("call over the bucket ran")
		}
	}
	if n, r := count(); n != 1 || !strings.HasPrefix(r[0], "1 call refused") {
		t.Fatalf("after 10 refusals: %d entries %q", n, r)
	}
	mu.Lock()
	now = now.Add(rateLimitedEvery + time.Millisecond) // the bucket refills too
	mu.Unlock()
	call()
	call() // refused: the tenth since the entry
	if n, r := count(); n != 2 || !strings.HasPrefix(r[1], "10 calls refused") || !strings.Contains(r[1], "limits.calls_per_second (1, burst 1)") {
		t.Fatalf("a minute later: %d entries %q", n, r)
	}
	call()
	call()
	g.Close()
	if n, r := count(); n != 3 || !strings.HasPrefix(r[2], "2 calls refused") {
		t.Fatalf("after close: %d entries %q", n, r)
	}
}
