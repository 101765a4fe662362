package guard

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// The shared windows' fields are authz's usage keys, in order.
func TestSharedUsageFieldsAreAuthzUsageKeys(t *testing.T) {
	var names []string
	for _, f := range usageFields {
		names = append(names, f.name)
	}
	if !slices.Equal(names, authz.UsageKeys()) {
		t.Errorf("shared usage fields %v, authz's %v", names, authz.UsageKeys())
	}
}

// A salami split between two replicas, racing on both, is judged as its
// sum: of eleven 9,999 transfers to one payee sent at once through A and
// B, one runs and ten wait for a human (the shipped rule: more than
// 10,000 to a payee in 24 hours). Those ten denied give their share back,
// in the table: 1 more runs on either replica.
func TestSplitTransfersAcrossReplicasAreJudgedAsTheirSum(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, a, b *store.DB) {
		c, err := config.Parse(countersign.DefaultConfig(), "shipped")
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, vocab.LevelLow)
		f.cat.Replace("test", []*tools.Spec{payTo("Acme Supplies")})
		f.humans.decide = make(chan vocab.State, 100)
		for range 10 {
			f.humans.decide <- vocab.StateDenied
		}
		policy := shippedPolicy(t)
		replica := func(db *store.DB) *Guard {
			w, err := store.OpenUsageWindows(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			g := New(Options{Catalog: f.cat, Policy: policy, Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans,
				Tools: c.Tools, SharedUsage: w})
			t.Cleanup(g.Close)
			return g
		}
		ga, gb := replica(a), replica(b)
		var wg sync.WaitGroup
		for i := range 11 {
			g := []*Guard{ga, gb}[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 9999.0}})
			}()
		}
		wg.Wait()
		kinds := map[vocab.Kind]int{}
		for _, k := range f.log.kinds() {
			kinds[k]++
		}
		if kinds[vocab.KindCallExecuted] != 1 || len(f.humans.created) != 10 {
			t.Fatalf("%d ran and %d waited for a human, want 1 and 10 (log %v)", kinds[vocab.KindCallExecuted], len(f.humans.created), kinds)
		}
		for _, g := range []*Guard{ga, gb} {
			g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 0.5}})
			if ks := f.log.kinds(); ks[len(ks)-1] != vocab.KindCallExecuted {
				t.Fatalf("0.5 more after 9,999 ran and the rest were denied: %v, want it to run", ks[len(ks)-1])
			}
		}
		// 9,999 + 0.5 + 0.5 moved: 1 more passes 10,000, on whichever replica.
		f.humans.decide <- vocab.StateDenied
		gb.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 1.0}})
		if len(f.humans.created) != 11 {
			t.Errorf("1 more after 10,000 moved through both replicas did not wait for a human")
		}
		// Another agent starts from nothing.
		ga.Handle(context.Background(), Call{Tool: "transfer", Agent: "other", Args: map[string]any{"amount": 9999.0}})
		if len(f.humans.created) != 11 {
			t.Errorf("another agent's 9,999 waited")
		}
	})
}

// A backchannel request's actions are judged and counted in the shared
// windows as their tools' calls are: the second payment sees the first,
// and the denials give both back, in the table.
func TestBackchannelActionsCountInTheSharedWindows(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		s := newRealStack(t, map[string]config.Tool{
			"ciba": {Level: "high", Approvers: []string{"role:ops"}},
			"pay":  {Level: "low", Rules: []config.Rule{{Name: "sum", When: "usage.agent_amount_24h > 0.0", Level: "critical"}}, Approvers: []string{"role:ops"}},
		})
		w, err := store.OpenUsageWindows(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		opts := s.g.opts
		opts.SharedUsage = w
		s.g.Close()
		s.g = New(opts)
		t.Cleanup(s.g.Close)
		pay := &tools.Spec{
			Def: mcp.NewToolWithRawSchema("pay", "", json.RawMessage(`{"type":"object"}`)),
			Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
				amount, _ := args["amount"].(float64)
				return &tools.Call{Args: args, Details: json.RawMessage(`[]`),
					Value: &tools.Value{Amount: amount, Currency: "USD", Counterparty: "X"}}, nil
			},
		}
		if err := s.cat.Replace("test", []*tools.Spec{pay}); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		raise := func() *approval.Request {
			t.Helper()
			call, err := s.g.PrepareAction(ctx, "pay", map[string]any{"amount": 100.0})
			if err != nil {
				t.Fatal(err)
			}
			b := backchannel(nil)
			b.Actions = []Action{{Tool: "pay", Call: call}}
			r, err := s.g.Raise(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		first := raise()
		if first.Level != "high" {
			t.Fatalf("first payment %s, want high", first.Level)
		}
		second := raise()
		if second.Level != "critical" {
			t.Fatalf("second payment %s, want critical: the first counts", second.Level)
		}
		s.g.usage.mu.Lock()
		inBook := s.g.usage.facts(keysOf("ci-bot", "pay", &tools.Value{Currency: "USD", Counterparty: "X"}), s.g.now())["agent_amount_24h"]
		s.g.usage.mu.Unlock()
		if inBook != 0.0 {
			t.Fatalf("the book counted %v: a shared tool's actions belong in the table", inBook)
		}
		s.tap(t, "alice", second.ID, vocab.Deny)
		s.tap(t, "alice", first.ID, vocab.Deny)
		key := []byte(keysOf("ci-bot", "pay", &tools.Value{Currency: "USD", Counterparty: "X"}).agent)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var left float64
			w.Decide(ctx, nil, []store.UsageWindow{{Key: key, Since: 0}}, 0, func(s []store.UsageSum) ([]store.UsageAdd, error) {
				left = s[0].Amount
				return nil, nil
			})
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("denied payments still count in the table: %v", left)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
