package guard

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/authz"
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

// The pending caps hold for calls made at once: the approval service
// counts them where it stores each request, and the guard refuses the
// calls over a cap with the words the agent always got, tallied as
// call.rate_limited, never as a call.denied each.
func TestPendingCapsRefuseParallelCallsOverThem(t *testing.T) {
	f := newFixture(t, vocab.LevelHigh)
	f.policy.d.Wait = authz.WaitPoll
	svc := freezes(t, f.log)
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Requests: svc, Tools: map[string]config.Tool{"pay": {}},
		Limits: Limits{PendingPerAgent: 2, PendingTotal: 3}})
	t.Cleanup(g.Close)
	calls := func(agent string, n int) (refusals []string) {
		out := make(chan string, n)
		for range n {
			go func() {
				res := g.Handle(context.Background(), Call{Tool: "pay", Agent: agent, Args: map[string]any{"amount": 1.0}})
				if !res.IsError {
					out <- ""
					return
				}
				out <- text(res)
			}()
		}
		for range n {
			if r := <-out; r != "" {
				refusals = append(refusals, r)
			}
		}
		return refusals
	}
	refused := calls("bot", 6)
	want := "refused: agent bot already has 2 approval requests waiting for a human, the most limits.pending_per_agent (2) allows; wait for them to be decided or to expire"
	if len(refused) != 4 {
		t.Fatalf("%d of 6 calls refused, want 4: %q", len(refused), refused)
	}
	for _, r := range refused {
		if r != want {
			t.Fatalf("refusal %q, want %q", r, want)
		}
	}
	refused = calls("other", 3)
	want = "refused: 3 approval requests are waiting for a human, the most limits.pending_total (3) allows; try again later"
	if len(refused) != 2 || refused[0] != want || refused[1] != want {
		t.Fatalf("second agent's refusals %q, want two of %q", refused, want)
	}
	if n, _ := svc.PendingCount(context.Background()); n != 3 {
		t.Errorf("%d requests pending, want 3", n)
	}
	kinds := f.log.kinds()
	if slices.Contains(kinds, vocab.KindCallDenied) || !slices.Contains(kinds, vocab.KindCallRateLimited) {
		t.Errorf("refusals recorded as %v, want call.rate_limited tallies and no call.denied", kinds)
	}
}

// Reconfigure (a reload) puts new limits in force for the next call, and
// the refusals the old limiter tallied are still recorded.
func TestReconfigureTakesNewLimits(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans,
		Limits: Limits{CallsPerSecond: 0.001, CallBurst: 1}, Tools: map[string]config.Tool{"pay": {}}})
	defer g.Close()
	call := func() bool {
		return !g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}}).IsError
	}
	if !call() || call() || call() {
		t.Fatal("a burst of 1 did not hold")
	}
	g.Reconfigure(map[string]config.Tool{"pay": {}}, Limits{CallsPerSecond: 0.001, CallBurst: 5})
	for i := range 5 {
		if !call() {
			t.Fatalf("call %d refused under the reloaded burst of 5", i+1)
		}
	}
	if call() {
		t.Fatal("a sixth call ran over the reloaded burst of 5")
	}
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	var reasons []string
	for _, e := range f.log.entries {
		if e.Kind == vocab.KindCallRateLimited {
			reasons = append(reasons, e.Reason)
		}
	}
	if len(reasons) < 2 || !strings.Contains(strings.Join(reasons, "|"), "burst 1") {
		t.Errorf("rate-limited entries %q: want the old limiter's refusals recorded", reasons)
	}
}

// A reload's argument limits hold for the next call: arguments the old
// limits took are refused under smaller ones, naming the new limit.
func TestReconfigureTakesNewArgumentLimits(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans,
		Tools: map[string]config.Tool{"pay": {}}})
	defer g.Close()
	args := map[string]any{"amount": 1.0, "to": strings.Repeat("x", 2000)}
	if res := g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: args}); res.IsError {
		t.Fatalf("2 KB of arguments under the default 64 KiB: %v", res.Content)
	}
	g.Reconfigure(map[string]config.Tool{"pay": {}}, Limits{MaxArgBytes: 1024})
	res := g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: args})
	if !res.IsError || !strings.Contains(fmt.Sprint(res.Content), "larger than 1024 bytes") {
		t.Fatalf("2 KB of arguments after a reload to 1024 bytes: %v", res.Content)
	}
	g.Reconfigure(map[string]config.Tool{"pay": {}}, Limits{MaxArgDepth: 2})
	res = g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0, "to": map[string]any{"a": map[string]any{"b": 1.0}}}})
	if !res.IsError || !strings.Contains(fmt.Sprint(res.Content), "nested deeper than 2 levels") {
		t.Fatalf("arguments 3 deep after a reload to depth 2: %v", res.Content)
	}
}
