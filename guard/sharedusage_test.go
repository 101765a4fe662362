package guard

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

func TestUsageReadNamesOnlyTheFieldsRulesRead(t *testing.T) {
	c, err := config.Parse(countersign.DefaultConfig(), "shipped")
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Sorted(maps.Keys(allUsage()))
	for _, tc := range []struct {
		when []string
		want []string
	}{
		{when: ruleWhens(c.Tools["transfer"].Rules), want: []string{"agent_amount_24h", "agent_payee_amount_24h"}},
		{when: []string{"usage.calls_1h > 3 && usage.total_amount_24h > 9"}, want: []string{"calls_1h", "total_amount_24h"}},
		{when: []string{"args.usage > 3 || my_usage.calls_1h > 1 || usages > 2"}},
		{when: []string{`usage["total_amount_24h"] > 3`}, want: all},
		{when: []string{"has(usage.calls_1h) && size(usage) > 0"}, want: all},
		{when: []string{"usage.calls_1h_typo > 0"}, want: all},
	} {
		var rules []config.Rule
		for _, w := range tc.when {
			rules = append(rules, config.Rule{When: w})
		}
		got := slices.Sorted(maps.Keys(usageRead(rules)))
		if !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
			t.Errorf("%q reads %v, want %v", tc.when, got, tc.want)
		}
	}
	var names []string
	for _, f := range usageFields {
		names = append(names, f.name)
	}
	if !slices.Equal(names, authz.UsageKeys()) {
		t.Errorf("shared usage fields %v, authz's %v", names, authz.UsageKeys())
	}
}

func ruleWhens(rules []config.Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.When)
	}
	return out
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
