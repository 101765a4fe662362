package guard

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// freezes is a real approval service on a fresh database, for its
// freezes; it records into log.
func freezes(t testing.TB, log *memLog) *approval.Service {
	t.Helper()
	ctx := context.Background()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	svc, err := approval.New(ctx, db, log, approval.Options{RPID: "localhost", Origins: []string{"http://localhost:8710"},
		Approvers: []approval.Approver{{ID: "alice"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// A frozen agent's call is refused before anything else, with the words
// an admin needs, and never runs; another agent's runs. The refusals are
// one call.denied entry per agent a minute, with their count. An
// unfreeze lets the agent's calls run again.
func TestFrozenAgentIsRefusedFirst(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	svc := freezes(t, f.log)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Freezes: svc, Now: clock, Tools: map[string]config.Tool{"pay": {}}})
	call := func(agent string) string {
		res := g.Handle(context.Background(), Call{Tool: "pay", Agent: agent, Args: map[string]any{"amount": 1.0}})
		if !res.IsError {
			return ""
		}
		return text(res)
	}
	denied := func() []string {
		f.log.mu.Lock()
		defer f.log.mu.Unlock()
		var out []string
		for _, e := range f.log.entries {
			if e.Kind == vocab.KindCallDenied {
				out = append(out, e.Agent+" "+e.Tool+" "+e.Decision+": "+e.Reason)
			}
		}
		return out
	}
	ctx := context.Background()
	if _, err := svc.FreezeAgent(ctx, "bot", "cli:ops", ""); err != nil {
		t.Fatal(err)
	}
	msg := call("bot")
	if !strings.HasPrefix(msg, "refused: agent bot is frozen by cli:ops since ") || !strings.HasSuffix(msg, "; an admin can run `countersign agents unfreeze bot`") {
		t.Fatalf("a frozen agent's call: %q", msg)
	}
	for range 5 {
		call("bot")
	}
	if msg := call("other"); msg != "" {
		t.Fatalf("another agent's call: %q", msg)
	}
	if f.tool.count() != 1 || len(f.policy.seen) != 1 {
		t.Fatalf("%d runs, %d policy decisions: want only the other agent's", f.tool.count(), len(f.policy.seen))
	}
	if d := denied(); len(d) != 1 || !strings.HasPrefix(d[0], "bot pay deny: agent bot is frozen by cli:ops") || !strings.HasSuffix(d[0], "(1 call refused so since the previous such entry)") {
		t.Fatalf("call.denied after 6 refusals: %q", d)
	}
	mu.Lock()
	now = now.Add(rateLimitedEvery + time.Millisecond)
	mu.Unlock()
	call("bot")
	if d := denied(); len(d) != 2 || !strings.HasSuffix(d[1], "(6 calls refused so since the previous such entry)") {
		t.Fatalf("call.denied a minute later: %q", d)
	}

	// Every agent: --all.
	if err := svc.UnfreezeAgent(ctx, "bot", "cli:ops", ""); err != nil {
		t.Fatal(err)
	}
	if msg := call("bot"); msg != "" {
		t.Fatalf("after the unfreeze: %q", msg)
	}
	if _, err := svc.FreezeAgent(ctx, freeze.AllAgents, "cli:ops", ""); err != nil {
		t.Fatal(err)
	}
	if msg := call("other"); !strings.Contains(msg, "all agents are frozen by cli:ops") || !strings.Contains(msg, "`countersign agents unfreeze --all`") {
		t.Fatalf("a call while every agent is frozen: %q", msg)
	}
	g.Close()
	if f.tool.count() != 2 {
		t.Fatalf("%d runs, want 2", f.tool.count())
	}
}

// What the check costs a routine call: the same call without Freezes and
// with it (one read of the freeze table, which is empty).
//
//	go test -run XXX -bench FreezeCheck ./guard
func BenchmarkFreezeCheck(b *testing.B) {
	for _, check := range []bool{false, true} {
		b.Run(map[bool]string{false: "without", true: "with"}[check], func(b *testing.B) {
			log := &memLog{}
			cat := tools.NewCatalog()
			if err := cat.Replace("test", []*tools.Spec{(&counter{}).spec("pay")}); err != nil {
				b.Fatal(err)
			}
			opts := Options{Catalog: cat, Policy: &fixedPolicy{d: authz.Decision{Level: vocab.LevelLow}}, Audit: log, Tools: map[string]config.Tool{"pay": {}},
				Limits: Limits{CallsPerSecond: 1e9, CallBurst: 1 << 30}}
			if check {
				opts.Freezes = freezes(b, log)
			}
			g := New(opts)
			defer g.Close()
			ctx := context.Background()
			for b.Loop() {
				if res := g.Handle(ctx, Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}}); res.IsError {
					b.Fatal(text(res))
				}
				log.mu.Lock()
				log.entries = log.entries[:0]
				log.mu.Unlock()
			}
		})
	}
}
