package authz

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/vocab"
	"go.yaml.in/yaml/v3"
)

// Case is one policy test: a call and the decision it should get.
//
// In a cases file (see LoadCases) it is written
//
//	cases:
//	  - name: large transfer needs treasury
//	    tool: transfer
//	    agent: agent-1                       # optional
//	    args: {to: Acme Supplies, amount: 10001, currency: USD}
//	    facts: {counterparty: {known: true}} # optional
//	    now: 2026-03-14T15:09:26Z            # optional; default: the time of the run
//	    expect: high
//	    expect_rules: [large-or-new-payee]   # optional; [] asserts no rule decided
type Case struct {
	Name, Tool, Agent string
	Args              map[string]any
	Facts             map[string]any
	Now               time.Time
	Expect            vocab.Level
	ExpectRules       []string // nil: not checked; empty: no rule may decide
}

// CaseError is a problem in a cases file, at a path such as cases[3].expect.
type CaseError struct {
	File string
	Path string
	Line int // 0 when unknown
	Msg  string
}

func (e *CaseError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Path != "" {
		b.WriteString(": " + e.Path)
	}
	return b.String() + ": " + e.Msg
}

// LoadCases reads a YAML file holding a list of cases under `cases:`.
// Numbers in args and facts become float64, as they would from JSON, so a
// case exercises the same comparisons as a real call. Every problem is
// reported, naming the case index and field.
func LoadCases(path string) ([]Case, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &CaseError{File: path, Msg: err.Error()}
	}
	return parseCases(data, path)
}

func parseCases(data []byte, file string) ([]Case, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &CaseError{File: file, Msg: "not valid YAML: " + strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "yaml: ")), " ")}
	}
	if len(root.Content) == 0 {
		return nil, &CaseError{File: file, Msg: "empty file: expected a list of cases under cases:"}
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, &CaseError{File: file, Line: top.Line, Msg: "expected a mapping with a list of cases under cases:"}
	}
	var list *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Value != "cases" {
			return nil, &CaseError{File: file, Path: k.Value, Line: k.Line, Msg: "unknown key (expected cases:)"}
		}
		list = v
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		line := top.Line
		if list != nil {
			line = list.Line
		}
		return nil, &CaseError{File: file, Path: "cases", Line: line, Msg: "expected a list of at least one case"}
	}
	var errs []error
	cases := make([]Case, 0, len(list.Content))
	for i, n := range list.Content {
		c, problems := parseCase(n, fmt.Sprintf("cases[%d]", i), file)
		errs = append(errs, problems...)
		cases = append(cases, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cases, nil
}

func parseCase(n *yaml.Node, path, file string) (Case, []error) {
	var c Case
	var errs []error
	fail := func(n *yaml.Node, p, format string, args ...any) {
		errs = append(errs, &CaseError{File: file, Path: p, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
	}
	if n.Kind != yaml.MappingNode {
		fail(n, path, "expected a mapping with tool, args and expect")
		return c, errs
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := path + "." + k.Value
		if seen[k.Value] {
			fail(k, p, "given twice")
			continue
		}
		seen[k.Value] = true
		var err error
		switch k.Value {
		case "name":
			err = v.Decode(&c.Name)
		case "tool":
			err = v.Decode(&c.Tool)
		case "agent":
			err = v.Decode(&c.Agent)
		case "expect":
			err = v.Decode(&c.Expect)
			if err == nil && !slices.Contains(levels, c.Expect) {
				err = fmt.Errorf("expected one of %s, got %q", levelList(), c.Expect)
			}
		case "expect_rules":
			c.ExpectRules = []string{}
			err = v.Decode(&c.ExpectRules)
		case "now":
			err = v.Decode(&c.Now)
			if err != nil {
				err = fmt.Errorf("expected an RFC 3339 time such as 2026-03-14T15:09:26Z, got %q", v.Value)
			}
		case "args", "facts":
			var m map[string]any
			if err = v.Decode(&m); err != nil {
				err = fmt.Errorf("expected a mapping: %v", err)
				break
			}
			var jm any
			if jm, err = jsonLike(m); err == nil {
				if k.Value == "args" {
					c.Args = jm.(map[string]any)
				} else {
					c.Facts = jm.(map[string]any)
				}
			}
		default:
			err = fmt.Errorf("unknown field (expected name, tool, agent, args, facts, now, expect, expect_rules)")
		}
		if err != nil {
			fail(v, p, "%s", strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "yaml: ")), " "))
		}
	}
	if c.Tool == "" && !seen["tool"] {
		fail(n, path+".tool", "required")
	}
	if !seen["expect"] {
		fail(n, path+".expect", "required: one of %s", levelList())
	}
	if c.Name == "" {
		c.Name = path
	}
	return c, errs
}

// jsonLike converts decoded YAML into what encoding/json would produce:
// float64 numbers, string-keyed maps, RFC 3339 strings for timestamps.
func jsonLike(v any) (any, error) {
	switch v := v.(type) {
	case nil, bool, string:
		return v, nil
	case float64:
		// JSON has no NaN or infinity; a YAML .nan would test a call no
		// agent can make.
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%v is not a JSON number", v)
		}
		return v, nil
	case int:
		return float64(v), nil
	case int64:
		return float64(v), nil
	case uint64:
		return float64(v), nil
	case float32:
		return float64(v), nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			var err error
			if out[i], err = jsonLike(e); err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			var err error
			if out[k], err = jsonLike(e); err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%v (%T) has no JSON equivalent (keys must be strings)", v, v)
	}
}

// CaseResult is the outcome of one Case.
type CaseResult struct {
	Case Case
	Got  Decision
	OK   bool
	Diff string // what differed, "" when OK
}

// RunCases decides every case and compares the level, and the rules when
// the case names them.
func (p *Policy) RunCases(cases []Case) []CaseResult {
	results := make([]CaseResult, len(cases))
	for i, c := range cases {
		// A case gives usage under facts: usage; otherwise the agent has
		// done nothing before.
		usage, _ := c.Facts["usage"].(map[string]any)
		got := p.Decide(Input{Tool: c.Tool, Agent: c.Agent, Args: c.Args, Facts: c.Facts, Now: c.Now, Usage: NoUsage(usage)})
		var diffs []string
		if got.Level != c.Expect {
			diffs = append(diffs, fmt.Sprintf("level: got %s, want %s", got.Level, c.Expect))
		}
		if c.ExpectRules != nil && !slices.Equal(got.Rules, c.ExpectRules) {
			diffs = append(diffs, fmt.Sprintf("rules: got [%s], want [%s]",
				strings.Join(got.Rules, ", "), strings.Join(c.ExpectRules, ", ")))
		}
		if len(diffs) > 0 {
			diffs = append(diffs, "reason: "+got.Reason)
		}
		results[i] = CaseResult{Case: c, Got: got, OK: len(diffs) == 0, Diff: strings.Join(diffs, "; ")}
	}
	return results
}
