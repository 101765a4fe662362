package authz

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// shippedFacts are the fact variables the shipped backends supply.
var shippedFacts = map[string][]string{
	"transfer":    {"counterparty"},
	"read_secret": {"secret"},
}

var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func shippedPolicy(t testing.TB) (*Policy, *config.Config) {
	t.Helper()
	c, err := config.Parse(countersign.DefaultConfig(), "mcp.yaml")
	if err != nil {
		t.Fatalf("parse shipped config: %v", err)
	}
	p, err := Compile(c.Tools, c.Approvers, Options{DefaultTimeout: c.Approval.Timeout, Facts: shippedFacts})
	if err != nil {
		t.Fatalf("compile shipped policy: %v", err)
	}
	return p, c
}

func known(k bool) map[string]any {
	return map[string]any{"counterparty": map[string]any{"name": "Acme Supplies", "known": k}}
}

func transfer(amount float64, knownPayee bool) Input {
	return Input{
		Tool: "transfer", Agent: "agent-1", Now: testNow,
		Args:  map[string]any{"to": "Acme Supplies", "amount": amount, "currency": "USD"},
		Facts: known(knownPayee),
		Usage: NoUsage(nil),
	}
}

// The salami attack against the shipped policy: what the agent already
// moved to the same payee counts, so a sum split into calls under the
// threshold is judged as the sum.
func TestShippedPolicySeesSplitTransfers(t *testing.T) {
	p, _ := shippedPolicy(t)
	var moved float64
	for i := 1; i <= 11; i++ {
		in := transfer(9999, true)
		in.Usage = NoUsage(map[string]any{"agent_payee_amount_24h": moved, "agent_amount_24h": moved})
		d := p.Decide(in)
		want := vocab.LevelLow
		if i >= 2 {
			want = vocab.LevelHigh // 9,999 + 9,999 > 10,000
		}
		if d.Level != want {
			t.Fatalf("transfer %d of 9,999 after %.0f: %s (%s), want %s", i, moved, d.Level, d.Reason, want)
		}
		moved += 9999
	}
	in := transfer(100, true)
	in.Usage = NoUsage(map[string]any{"agent_amount_24h": 999950.0})
	if d := p.Decide(in); d.Level != vocab.LevelCritical {
		t.Errorf("100 after 999,950 in a day: %s, want critical", d.Level)
	}
	in.Usage = nil
	if d := p.Decide(in); d.Level != vocab.LevelDeny {
		t.Errorf("without usage facts: %s, want deny (fail closed)", d.Level)
	}
}

func TestShippedPolicy(t *testing.T) {
	p, _ := shippedPolicy(t)
	secret := func(class string) Input {
		return Input{Tool: "read_secret", Agent: "a", Now: testNow,
			Args:  map[string]any{"name": "prod-db-password"},
			Facts: map[string]any{"secret": map[string]any{"name": "prod-db-password", "classification": class}}}
	}
	deploy := func(env string) Input {
		return Input{Tool: "deploy", Agent: "a", Now: testNow,
			Args: map[string]any{"service": "api", "version": "1.2.3", "environment": env}}
	}
	tests := []struct {
		name      string
		in        Input
		level     vocab.Level
		rules     []string
		approvers []string
		quorum    int
		uv        vocab.UserVerification
	}{
		{"small transfer to known payee", transfer(100, true), vocab.LevelLow, nil, nil, 0, vocab.UVPreferred},
		{"exactly 10000 stays low", transfer(10000, true), vocab.LevelLow, nil, nil, 0, vocab.UVPreferred},
		{"10001 is high", transfer(10001, true), vocab.LevelHigh, []string{"large-or-new-payee"}, []string{"alice", "bob"}, 1, vocab.UVPreferred},
		{"small to unknown payee is high", transfer(5, false), vocab.LevelHigh, []string{"large-or-new-payee"}, []string{"alice", "bob"}, 1, vocab.UVPreferred},
		{"exactly 250000 stays high", transfer(250000, true), vocab.LevelHigh, []string{"large-or-new-payee"}, []string{"alice", "bob"}, 1, vocab.UVPreferred},
		{"250001 is critical", transfer(250001, true), vocab.LevelCritical, []string{"very-large"}, []string{"alice", "bob"}, 2, vocab.UVRequired},
		{"critical to unknown payee", transfer(500000, false), vocab.LevelCritical, []string{"very-large"}, []string{"alice", "bob"}, 2, vocab.UVRequired},
		{"deploy staging", deploy("staging"), vocab.LevelLow, nil, nil, 0, vocab.UVPreferred},
		{"deploy production", deploy("production"), vocab.LevelHigh, []string{"production"}, []string{"alice"}, 1, vocab.UVPreferred},
		{"restricted secret", secret("restricted"), vocab.LevelHigh, []string{"restricted-secret"}, []string{"alice"}, 1, vocab.UVPreferred},
		{"internal secret", secret("internal"), vocab.LevelLow, nil, nil, 0, vocab.UVPreferred},
		{"routine read", Input{Tool: "get_balance", Now: testNow}, vocab.LevelLow, nil, nil, 0, vocab.UVPreferred},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.in)
			if d.Level != tc.level {
				t.Fatalf("level = %s, want %s (reason %q)", d.Level, tc.level, d.Reason)
			}
			if !slices.Equal(d.Rules, tc.rules) {
				t.Errorf("rules = %q, want %q", d.Rules, tc.rules)
			}
			if !slices.Equal(d.Approvers, tc.approvers) {
				t.Errorf("approvers = %q, want %q", d.Approvers, tc.approvers)
			}
			if d.Quorum != tc.quorum {
				t.Errorf("quorum = %d, want %d", d.Quorum, tc.quorum)
			}
			if d.UserVerification != tc.uv {
				t.Errorf("user verification = %q, want %q", d.UserVerification, tc.uv)
			}
			if d.Wait != WaitBlock || d.Timeout != 5*time.Minute {
				t.Errorf("wait, timeout = %q, %s; want block, 5m", d.Wait, d.Timeout)
			}
			if d.Reason == "" {
				t.Error("empty reason")
			}
		})
	}
}

func TestReasonNamesRule(t *testing.T) {
	p, _ := shippedPolicy(t)
	d := p.Decide(transfer(10001, true))
	if want := "rule large-or-new-payee raised transfer to high"; d.Reason != want {
		t.Errorf("reason = %q, want %q", d.Reason, want)
	}
}

func TestDecisionDoesNotAliasPolicy(t *testing.T) {
	p, _ := shippedPolicy(t)
	d := p.Decide(transfer(10001, true))
	d.Approvers[0] = "mallory"
	d.Rules[0] = "tampered"
	d = p.Decide(transfer(10001, true))
	if d.Approvers[0] != "alice" || d.Rules[0] != "large-or-new-payee" {
		t.Fatalf("a caller's edit leaked into the policy: %+v", d)
	}
}

func TestUnknownToolDenied(t *testing.T) {
	p, _ := shippedPolicy(t)
	for _, name := range []string{"rm_rf", "", "Transfer", "transfer "} {
		d := p.Decide(Input{Tool: name, Now: testNow})
		if d.Level != vocab.LevelDeny || !strings.Contains(d.Reason, "unknown tool") {
			t.Errorf("tool %q: got %s %q, want deny for unknown tool", name, d.Level, d.Reason)
		}
	}
	var nilPolicy *Policy
	if d := nilPolicy.Decide(transfer(1, true)); d.Level != vocab.LevelDeny {
		t.Errorf("nil policy: got %s, want deny", d.Level)
	}
}

// compileOne compiles a policy of one tool, t, with alice (treasury, ops)
// and bob (treasury) as approvers.
func compileOne(t *testing.T, tool config.Tool, facts ...string) *Policy {
	t.Helper()
	p, err := Compile(map[string]config.Tool{"x": tool}, testApprovers, Options{Facts: map[string][]string{"x": facts}})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return p
}

var testApprovers = []config.Approver{
	{ID: "alice", Roles: []string{"treasury", "ops"}},
	{ID: "bob", Roles: []string{"treasury"}},
	{ID: "carol", Roles: []string{"ops"}},
}

func TestFailClosed(t *testing.T) {
	tests := []struct {
		name  string
		when  string
		facts []string
		args  map[string]any
		inFct map[string]any
		want  string // in the reason
	}{
		{"missing arg", "args.amount > 10", nil, map[string]any{"to": "x"}, nil, "no such key"},
		{"nil args", "args.amount > 10", nil, nil, nil, "no such key"},
		{"missing fact", "!counterparty.known", []string{"counterparty"}, map[string]any{}, nil, "counterparty"},
		{"missing fact field", "!counterparty.known", []string{"counterparty"}, map[string]any{}, map[string]any{"counterparty": map[string]any{}}, "no such key"},
		{"fact not a map", "counterparty.known == true", []string{"counterparty"}, nil, map[string]any{"counterparty": "yes"}, "rule r"},
		{"runtime type error", "args.amount > 'x'", nil, map[string]any{"amount": 5.0}, nil, "no such overload"},
		{"dyn bool is a string", "args.flag == true || args.flag", nil, map[string]any{"flag": "yes"}, nil, "rule r"},
		{"division by zero", "1 / int(args.n) == 0", nil, map[string]any{"n": 0.0}, nil, "division by zero"},
		{"modulus by zero", "int(args.n) % 0 == 0", nil, map[string]any{"n": 3.0}, nil, "modulus by zero"},
		{"cost limit", "[1,2,3,4,5,6,7,8,9,10].all(a, args.l.all(b, args.l.all(c, args.l.all(d, a+b+c+d > 0))))", nil,
			map[string]any{"l": ones(100)}, nil, "cost limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := compileOne(t, config.Tool{Level: "low", Approvers: []string{"alice"},
				Rules: []config.Rule{{Name: "r", When: tc.when, Level: "high"}}}, tc.facts...)
			d := p.Decide(Input{Tool: "x", Args: tc.args, Facts: tc.inFct, Now: testNow})
			if d.Level != vocab.LevelDeny {
				t.Fatalf("level = %s, want deny (reason %q)", d.Level, d.Reason)
			}
			if !slices.Equal(d.Rules, []string{"r"}) {
				t.Errorf("rules = %q, want [r]", d.Rules)
			}
			for _, want := range []string{"x: rule r failed to evaluate", "fail closed", tc.want} {
				if !strings.Contains(d.Reason, want) {
					t.Errorf("reason %q does not contain %q", d.Reason, want)
				}
			}
		})
	}
}

func ones(n int) []any {
	l := make([]any, n)
	for i := range l {
		l[i] = 1.0
	}
	return l
}

func TestFailClosedWhateverTheOrder(t *testing.T) {
	// The critical rule matches first; the broken high rule after it must
	// still deny rather than be skipped as unable to change the outcome.
	p := compileOne(t, config.Tool{Level: "low", Approvers: []string{"role:treasury"}, Rules: []config.Rule{
		{Name: "big", When: "args.amount > 100", Level: "critical"},
		{Name: "broken", When: "args.missing > 1", Level: "high"},
	}})
	d := p.Decide(Input{Tool: "x", Args: map[string]any{"amount": 1000.0}, Now: testNow})
	if d.Level != vocab.LevelDeny || !strings.Contains(d.Reason, "broken") {
		t.Fatalf("got %s %q, want deny naming rule broken", d.Level, d.Reason)
	}
}

func TestHasGuardsMissingArg(t *testing.T) {
	p := compileOne(t, config.Tool{Level: "low", Approvers: []string{"alice"}, Rules: []config.Rule{
		{Name: "big", When: "has(args.amount) && args.amount > 100", Level: "high"},
		{Name: "new", When: "has(counterparty.known) && !counterparty.known", Level: "high"},
	}}, "counterparty")
	in := Input{Tool: "x", Args: map[string]any{}, Facts: map[string]any{"counterparty": map[string]any{}}, Now: testNow}
	if d := p.Decide(in); d.Level != vocab.LevelLow {
		t.Fatalf("guarded rules on missing fields: got %s %q, want low", d.Level, d.Reason)
	}
	in.Args["amount"] = 101.0
	if d := p.Decide(in); d.Level != vocab.LevelHigh {
		t.Fatalf("guarded rule on present field: got %s %q, want high", d.Level, d.Reason)
	}
}

func TestHighestLevelWinsAndNamesEveryRule(t *testing.T) {
	p := compileOne(t, config.Tool{Level: "low", Approvers: []string{"role:treasury"}, Quorum: 2, Rules: []config.Rule{
		{Name: "a", When: "args.n > 1", Level: "high"},
		{Name: "b", When: "args.n > 2", Level: "critical"},
		{When: "args.n > 3", Level: "critical", Approvers: []string{"role:ops"}},
		{Name: "d", When: "args.n > 4", Level: "critical", Quorum: 1},
		{Name: "no", When: "args.n > 10", Level: "deny"},
		{Name: "ops-hours", When: "now.getHours('UTC') < 6 && agent == 'night-bot' && tool == 'x'", Level: "high", Approvers: []string{"carol"}},
	}})
	tests := []struct {
		n         float64
		agent     string
		level     vocab.Level
		rules     []string
		approvers []string
		quorum    int
	}{
		{1, "", vocab.LevelLow, nil, nil, 0},
		{2, "", vocab.LevelHigh, []string{"a"}, []string{"alice", "bob"}, 1},
		{3, "", vocab.LevelCritical, []string{"b"}, []string{"alice", "bob"}, 2},
		{4, "", vocab.LevelCritical, []string{"b", "rules[2]"}, []string{"alice", "carol"}, 2},
		{5, "", vocab.LevelCritical, []string{"b", "rules[2]", "d"}, []string{"alice", "carol"}, 1},
		{11, "", vocab.LevelDeny, []string{"no"}, nil, 0},
		{0, "night-bot", vocab.LevelHigh, []string{"ops-hours"}, []string{"carol"}, 1},
		// The first matching rule at the level that sets approvers decides them.
		{2, "night-bot", vocab.LevelHigh, []string{"a", "ops-hours"}, []string{"carol"}, 1},
	}
	night := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	for _, tc := range tests {
		d := p.Decide(Input{Tool: "x", Agent: tc.agent, Args: map[string]any{"n": tc.n}, Now: night})
		if d.Level != tc.level || !slices.Equal(d.Rules, tc.rules) || !slices.Equal(d.Approvers, tc.approvers) || d.Quorum != tc.quorum {
			t.Errorf("n=%v agent=%q: got %s %q approvers %q quorum %d, want %s %q %q %d (reason %q)",
				tc.n, tc.agent, d.Level, d.Rules, d.Approvers, d.Quorum, tc.level, tc.rules, tc.approvers, tc.quorum, d.Reason)
		}
		if tc.level == vocab.LevelCritical && d.UserVerification != vocab.UVRequired {
			t.Errorf("n=%v: critical with user verification %q", tc.n, d.UserVerification)
		}
	}
	if d := p.Decide(Input{Tool: "x", Args: map[string]any{"n": 11.0}, Now: night}); d.Reason != "rule no denied x" {
		t.Errorf("deny reason = %q", d.Reason)
	}
}

func TestToolSettings(t *testing.T) {
	p, err := Compile(map[string]config.Tool{
		"off":  {Level: "deny", Rules: []config.Rule{{Name: "never", When: "true", Level: "deny"}}},
		"slow": {Level: "high", Approvers: []string{"bob"}, UserVerification: "discouraged", Wait: "poll", Timeout: time.Hour},
		"dflt": {Level: "critical", Approvers: []string{"alice", "bob"}},
	}, testApprovers, Options{DefaultTimeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(Input{Tool: "off"}); d.Level != vocab.LevelDeny || d.Rules != nil || !strings.Contains(d.Reason, "configured level") {
		t.Errorf("off: %+v", d)
	}
	d := p.Decide(Input{Tool: "slow"})
	if d.Level != vocab.LevelHigh || d.UserVerification != vocab.UVDiscouraged || d.Wait != WaitPoll || d.Timeout != time.Hour || d.Quorum != 1 {
		t.Errorf("slow: %+v", d)
	}
	d = p.Decide(Input{Tool: "dflt"})
	if d.Level != vocab.LevelCritical || d.UserVerification != vocab.UVRequired || d.Wait != WaitBlock || d.Timeout != 90*time.Second || d.Quorum != 2 {
		t.Errorf("dflt: %+v", d)
	}
}

func FuzzDecide(f *testing.F) {
	p, _ := shippedPolicy(f)
	for _, s := range []string{
		`{"to":"Acme Supplies","amount":100,"currency":"USD"}`,
		`{"amount":250001}`, `{"amount":"lots"}`, `{"amount":null}`, `{"amount":[1,2]}`,
		`{"amount":{"value":1}}`, `{"environment":"production"}`, `{"environment":7}`,
		`{"name":"prod-db-password"}`, `{}`, `[]`, `null`, `"x"`, `{"amount":1e308}`, `{"amount":-0}`,
	} {
		for _, tool := range []string{"transfer", "deploy", "read_secret", "nope"} {
			f.Add(tool, []byte(s), true, "restricted")
		}
	}
	f.Fuzz(func(t *testing.T, tool string, raw []byte, knownPayee bool, class string) {
		var args map[string]any
		if err := json.Unmarshal(raw, &args); err != nil || args == nil {
			t.Skip()
		}
		facts := map[string]any{
			"counterparty": map[string]any{"known": knownPayee},
			"secret":       map[string]any{"classification": class},
		}
		d := p.Decide(Input{Tool: tool, Agent: "fuzz", Args: args, Facts: facts, Now: testNow})
		if !slices.Contains(levels, d.Level) {
			t.Fatalf("level %q is not one of %v", d.Level, levels)
		}
		if d.Reason == "" {
			t.Fatal("empty reason")
		}
		if _, ok := p.tools[tool]; !ok && d.Level != vocab.LevelDeny {
			t.Fatalf("tool %q is not configured but got %s", tool, d.Level)
		}
		if (d.Level == vocab.LevelHigh || d.Level == vocab.LevelCritical) && (len(d.Approvers) == 0 || d.Quorum < 1 || d.Quorum > len(d.Approvers)) {
			t.Fatalf("%s decision that no one can approve: %+v", d.Level, d)
		}
	})
}

func BenchmarkDecide(b *testing.B) {
	p, _ := shippedPolicy(b)
	in := transfer(12000, true)
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Decide(in); d.Level != vocab.LevelHigh {
			b.Fatal(d.Level, d.Reason)
		}
	}
}

func TestDecideConcurrently(t *testing.T) {
	p, _ := shippedPolicy(t)
	inputs := []struct {
		in   Input
		want vocab.Level
	}{
		{transfer(1, true), vocab.LevelLow},
		{transfer(20000, true), vocab.LevelHigh},
		{transfer(300000, true), vocab.LevelCritical},
		{Input{Tool: "transfer", Args: map[string]any{}, Facts: known(true), Now: testNow, Usage: NoUsage(nil)}, vocab.LevelDeny},
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			var err error
			for i := range 500 {
				tc := inputs[(g+i)%len(inputs)]
				if d := p.Decide(tc.in); d.Level != tc.want && err == nil {
					err = fmt.Errorf("goroutine %d: got %s, want %s (%s)", g, d.Level, tc.want, d.Reason)
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
