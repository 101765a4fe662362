package authz

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

var grantApprovers = []config.Approver{{ID: "alice", Roles: []string{"treasury"}}}

func grantTool(level vocab.Level, g config.Grants, rules ...config.Rule) config.Tool {
	return config.Tool{Level: level, Approvers: []string{"alice"}, Rules: rules, Grants: g}
}

var grantSchema = Schema{Args: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{
	"from":{"type":"string"},"to":{"type":"string"},"amount":{"type":"number"},"currency":{"type":"string"},"memo":{"type":"string"}}}`)}

func TestGrantsCompileErrors(t *testing.T) {
	ok := config.Grants{MaxDuration: 15 * time.Minute, MaxCalls: 10, AtMost: []string{"amount"}, Free: []string{"memo"}}
	high := config.Rule{When: "args.amount > 10000", Level: "high"}
	for name, tc := range map[string]struct {
		tool config.Tool
		want string
	}{
		"critical tool":       {grantTool("critical", ok), "tools.transfer.grants: not allowed on a critical tool"},
		"never high":          {grantTool("low", ok, config.Rule{When: "true", Level: "critical"}), "has no effect: no rule raises transfer to high"},
		"redacted arguments":  {config.Tool{Level: "high", Approvers: []string{"alice"}, RedactArgs: true, Grants: ok}, "not allowed with redact_args"},
		"unknown argument":    {grantTool("low", config.Grants{MaxDuration: time.Hour, MaxCalls: 1, Free: []string{"memmo"}}, high), `tools.transfer.grants.free[0]: transfer has no argument "memmo"`},
		"at_most on a string": {grantTool("low", config.Grants{MaxDuration: time.Hour, MaxCalls: 1, AtMost: []string{"to"}}, high), `argument "to" is a string; at_most takes numbers`},
		"no limits":           {grantTool("low", config.Grants{AtMost: []string{"amount"}}, high), "needs max_duration"},
	} {
		_, err := Compile(map[string]config.Tool{"transfer": tc.tool}, grantApprovers, Options{Schemas: map[string]Schema{"transfer": grantSchema}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	p, err := Compile(map[string]config.Tool{"transfer": grantTool("low", ok, high)}, grantApprovers, Options{Schemas: map[string]Schema{"transfer": grantSchema}})
	if err != nil {
		t.Fatal(err)
	}
	// Only a high decision carries the terms.
	if d := p.Decide(Input{Tool: "transfer", Args: map[string]any{"amount": 20000.0}}); d.Level != "high" || d.Grant == nil || d.Grant.MaxCalls != 10 {
		t.Errorf("high decision: %+v", d)
	}
	if d := p.Decide(Input{Tool: "transfer", Args: map[string]any{"amount": 20.0}}); d.Grant != nil {
		t.Errorf("low decision carries grant terms: %+v", d)
	}
}

func TestProposedConditionIsNarrow(t *testing.T) {
	terms := &GrantTerms{MaxDuration: time.Hour, MaxCalls: 3, AtMost: []string{"amount"}, Free: []string{"memo"}}
	req := map[string]any{"from": "operating", "to": "Acme \"Supplies\"\u202e", "amount": 500.0, "currency": "USD"}
	cond, err := ProposeGrant(terms, "ci", "transfer", req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cond, `args.to == "Acme \"Supplies\"\u202e"`) || !strings.Contains(cond, "args.amount <= 500") {
		t.Fatalf("condition %s", cond)
	}
	c, err := CompileCondition(cond)
	if err != nil {
		t.Fatal(err)
	}
	with := func(edit func(map[string]any)) map[string]any {
		m := map[string]any{}
		for k, v := range req {
			m[k] = v
		}
		edit(m)
		return m
	}
	for name, tc := range map[string]struct {
		agent string
		args  map[string]any
		want  bool
	}{
		"the same call":        {"ci", req, true},
		"a lower amount":       {"ci", with(func(m map[string]any) { m["amount"] = 499.99 }), true},
		"a memo (free)":        {"ci", with(func(m map[string]any) { m["memo"] = "hi" }), true},
		"a higher amount":      {"ci", with(func(m map[string]any) { m["amount"] = 500.01 }), false},
		"another payee":        {"ci", with(func(m map[string]any) { m["to"] = "Acme" }), false},
		"another agent":        {"cj", req, false},
		"an extra argument":    {"ci", with(func(m map[string]any) { m["idempotency_key"] = "k" }), false},
		"a missing argument":   {"ci", with(func(m map[string]any) { delete(m, "from") }), false},
		"amount of wrong type": {"ci", with(func(m map[string]any) { m["amount"] = "1" }), false},
	} {
		got, err := c.Match(tc.agent, "transfer", tc.args)
		if got != tc.want {
			t.Errorf("%s: match %v (%v), want %v", name, got, err, tc.want)
		}
	}
	if ok, _ := c.Match("ci", "deploy", req); ok {
		t.Error("the condition matches another tool")
	}
	if _, err := ProposeGrant(terms, "ci", "transfer", map[string]any{"to": []any{"a"}}); err == nil {
		t.Error("a list argument was pinned")
	}
	for _, bad := range []string{"now > timestamp('2020-01-01T00:00:00Z')", "usage.calls_1h < 3", "args.amount"} {
		if _, err := CompileCondition(bad); err == nil {
			t.Errorf("condition %q compiled", bad)
		}
	}
}
