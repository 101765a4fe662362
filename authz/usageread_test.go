package authz

import (
	"maps"
	"slices"
	"testing"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
)

func TestUsageReadNamesOnlyTheFieldsRulesRead(t *testing.T) {
	c, err := config.Parse(countersign.DefaultConfig(), "shipped")
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Sorted(maps.Keys(allUsage()))
	var shipped []string
	for _, r := range c.Tools["transfer"].Rules {
		shipped = append(shipped, r.When)
	}
	for _, tc := range []struct {
		when []string
		want []string
	}{
		{when: shipped, want: []string{"agent_amount_24h", "agent_payee_amount_24h"}},
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
		got := slices.Sorted(maps.Keys(UsageRead(rules)))
		if !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
			t.Errorf("%q reads %v, want %v", tc.when, got, tc.want)
		}
	}
}
