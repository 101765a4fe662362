package authz

import (
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

func TestCompileErrors(t *testing.T) {
	low := func(rules ...config.Rule) config.Tool {
		return config.Tool{Level: "low", Approvers: []string{"role:treasury"}, Rules: rules}
	}
	tests := []struct {
		name  string
		tool  config.Tool
		facts []string
		want  []string // each must appear in the error
	}{
		{"syntax error", low(config.Rule{When: "args.amount > 1", Level: "high"}, config.Rule{When: "args.amount >", Level: "high"}),
			nil, []string{"tools.x.rules[1].when: column 14 (the end): the condition ends where a value or name should follow"}},
		{"unknown variable", low(config.Rule{When: "true", Level: "high"}, config.Rule{When: "argz.amount > 1", Level: "high"}),
			nil, []string{`tools.x.rules[1].when: column 1 (at "argz.amount > 1"): unknown name "argz" (did you mean 'args'?)`}},
		{"unknown variable mid-expression", low(config.Rule{When: "args.a > 1 || argz.b", Level: "high"}),
			nil, []string{`tools.x.rules[0].when: column 15 (at "argz.b"): unknown name "argz"`}},
		{"fact of another tool", low(config.Rule{When: "!counterparty.known", Level: "high"}),
			nil, []string{`tools.x.rules[0].when: column 2 (at "counterparty.known"): unknown name "counterparty"`}},
		{"non-bool", low(config.Rule{When: "args.amount", Level: "high"}),
			nil, []string{"tools.x.rules[0].when: must be a bool expression, got dyn"}},
		{"non-bool int", low(config.Rule{When: "1 + 2", Level: "high"}),
			nil, []string{"tools.x.rules[0].when: must be a bool expression, got int"}},
		{"empty expression", low(config.Rule{When: "  ", Level: "high"}),
			nil, []string{"tools.x.rules[0].when: required"}},
		{"bad rule level", low(config.Rule{When: "true", Level: "hihg"}),
			nil, []string{`tools.x.rules[0].level: expected one of low, high, critical, deny, got "hihg"`}},
		{"rule that cannot raise", config.Tool{Level: "high", Approvers: []string{"alice"}, Rules: []config.Rule{{When: "true", Level: "high", Approvers: []string{"bob"}}}},
			nil, []string{"tools.x.rules[0].level: high does not raise the tool's level high; rules only raise"}},
		{"bad tool level", config.Tool{Level: "medium"},
			nil, []string{`tools.x.level: expected one of low, high, critical, deny, got "medium"`}},
		{"unknown approver", config.Tool{Level: "high", Approvers: []string{"alice", "mallory"}},
			nil, []string{`tools.x.approvers[1]: unknown approver "mallory"`}},
		{"unknown approver on rule", low(config.Rule{When: "true", Level: "high", Approvers: []string{"eve"}}),
			nil, []string{`tools.x.rules[0].approvers[0]: unknown approver "eve"`}},
		{"role with no members", config.Tool{Level: "high", Approvers: []string{"role:legal"}},
			nil, []string{`tools.x.approvers[0]: no approver has role "legal"`}},
		{"high without approvers", config.Tool{Level: "high"},
			nil, []string{"tools.x.approvers: required: level high needs approvers"}},
		{"rule raises to high without approvers", config.Tool{Level: "low", Rules: []config.Rule{{When: "true", Level: "high"}}},
			nil, []string{"tools.x.rules[0]: level high needs approvers"}},
		{"quorum too large", low(config.Rule{When: "true", Level: "critical", Quorum: 3}),
			nil, []string{"tools.x.rules[0].quorum: critical quorum 3 exceeds the 2 distinct approver(s) allowed by tools.x.approvers (alice, bob)"}},
		{"default quorum too large", config.Tool{Level: "critical", Approvers: []string{"bob", "bob"}},
			nil, []string{"tools.x.quorum: critical quorum 2 exceeds the 1 distinct approver(s) allowed by tools.x.approvers (bob)"}},
		{"quorum too large for rule approvers", low(config.Rule{When: "true", Level: "critical", Approvers: []string{"carol"}}),
			nil, []string{"tools.x.quorum: critical quorum 2 exceeds the 1 distinct approver(s) allowed by tools.x.rules[0].approvers (carol)"}},
		{"negative quorum", config.Tool{Level: "critical", Approvers: []string{"role:treasury"}, Quorum: -1},
			nil, []string{"tools.x.quorum: expected 0 (the level's default) or more, got -1"}},
		{"quorum on a high rule", low(config.Rule{When: "true", Level: "high", Quorum: 2}),
			nil, []string{"tools.x.rules[0].quorum: quorum 2 applies only to critical rules"}},
		{"tool quorum that never applies", config.Tool{Level: "high", Approvers: []string{"role:treasury"}, Quorum: 2},
			nil, []string{"tools.x.quorum: quorum 2 has no effect"}},
		{"bad user verification", config.Tool{Level: "low", UserVerification: "always"},
			nil, []string{`tools.x.user_verification: expected one of required, preferred, discouraged, got "always"`}},
		{"bad wait", config.Tool{Level: "low", Wait: "async"},
			nil, []string{`tools.x.wait: expected one of block, poll, got "async"`}},
		{"duplicate rule name", low(config.Rule{Name: "a", When: "true", Level: "high"}, config.Rule{Name: "a", When: "false", Level: "high"}),
			nil, []string{`tools.x.rules[1].name: "a" is already the name of rules[0]`}},
		{"fact shadows a variable", config.Tool{Level: "low"},
			[]string{"args"}, []string{`tools.x: fact variable "args"`}},
		{"several problems reported at once", config.Tool{Level: "low", Wait: "x", Rules: []config.Rule{{When: "nope", Level: "high"}}},
			nil, []string{"tools.x.wait:", `tools.x.rules[0].when: column 1 (at "nope"): unknown name "nope"`, "tools.x.rules[0]: level high needs approvers"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(map[string]config.Tool{"x": tc.tool}, testApprovers,
				Options{Facts: map[string][]string{"x": tc.facts}})
			if err == nil {
				t.Fatal("compiled; want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			var ce *CompileError
			if !errors.As(err, &ce) || !strings.HasPrefix(ce.Path, "tools.x") {
				t.Errorf("no *CompileError with a tools.x path in %v", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, want)
				}
			}
			if strings.Contains(err.Error(), " | ") {
				t.Errorf("error carries CEL's multi-line excerpt: %q", err)
			}
		})
	}
}

func TestCompileAcceptsEdgeConfigs(t *testing.T) {
	tools := map[string]config.Tool{
		// Quorum 1 is allowed on high; a critical rule with its own approvers
		// and quorum needs nothing from the tool.
		"a": {Level: "low", Rules: []config.Rule{
			{When: "true", Level: "high", Approvers: []string{"bob"}, Quorum: 1},
			{When: "args.n > 1", Level: "critical", Approvers: []string{"role:ops"}, Quorum: 2},
		}},
		// A switched-off tool keeps its rules valid but never evaluates them.
		"b": {Level: "deny", Rules: []config.Rule{{When: "args.x > 1", Level: "high"}}},
		// Low tools need no approvers.
		"c": {Level: "low"},
	}
	p, err := Compile(tools, testApprovers, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(Input{Tool: "a", Args: map[string]any{"n": 2.0}}); d.Level != vocab.LevelCritical || d.Quorum != 2 || len(d.Approvers) != 2 {
		t.Errorf("a: %+v", d)
	}
	if d := p.Decide(Input{Tool: "b", Args: map[string]any{"x": 5.0}}); d.Level != vocab.LevelDeny {
		t.Errorf("b: %+v", d)
	}
}
