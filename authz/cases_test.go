package authz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/vocab"
)

func TestShippedCasesPass(t *testing.T) {
	p, _ := shippedPolicy(t)
	cases, err := LoadCases("testdata/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 10 {
		t.Fatalf("only %d cases loaded", len(cases))
	}
	seen := map[vocab.Level]bool{}
	for _, r := range p.RunCases(cases) {
		seen[r.Got.Level] = true
		if !r.OK || r.Diff != "" {
			t.Errorf("%s: %s", r.Case.Name, r.Diff)
		}
	}
	for _, level := range levels {
		if !seen[level] {
			t.Errorf("no case in testdata/cases.yaml decides %s", level)
		}
	}
}

func TestLoadCasesDecodesLikeJSON(t *testing.T) {
	cases := loadString(t, `
cases:
  - tool: transfer
    args: {amount: 10001, ratio: 0.5, tags: [1, two], when: 2026-01-02T03:04:05Z, nested: {n: 3}}
    now: 2026-03-14T15:09:26Z
    expect: high
`)
	c := cases[0]
	if c.Name != "cases[0]" {
		t.Errorf("name = %q, want cases[0]", c.Name)
	}
	if got, ok := c.Args["amount"].(float64); !ok || got != 10001 {
		t.Errorf("amount = %#v, want float64 10001", c.Args["amount"])
	}
	if got, ok := c.Args["tags"].([]any)[0].(float64); !ok || got != 1 {
		t.Errorf("tags[0] = %#v, want float64 1", c.Args["tags"])
	}
	if got, ok := c.Args["nested"].(map[string]any)["n"].(float64); !ok || got != 3 {
		t.Errorf("nested.n = %#v, want float64 3", c.Args["nested"])
	}
	if _, ok := c.Args["when"].(string); !ok {
		t.Errorf("when = %#v, want a string as JSON would give", c.Args["when"])
	}
	if !c.Now.Equal(testNow) {
		t.Errorf("now = %s, want %s", c.Now, testNow)
	}
	if c.ExpectRules != nil {
		t.Errorf("expect_rules absent but got %q", c.ExpectRules)
	}
}

func TestLoadCasesErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"empty file", "", []string{"empty file"}},
		{"no cases", "cases: []\n", []string{":1: cases: expected a list of at least one case"}},
		{"cases not a list", "cases: {tool: x}\n", []string{":1: cases: expected a list"}},
		{"not a mapping", "- tool: x\n", []string{":1: expected a mapping with a list of cases under cases:"}},
		{"bad yaml", "cases: [\n", []string{"not valid YAML"}},
		{"unknown top-level key", "cases: [{tool: x, expect: low}]\ntests: []\n", []string{":2: tests: unknown key (expected cases:)"}},
		{"case not a mapping", "cases:\n  - just a string\n", []string{":2: cases[0]: expected a mapping"}},
		{"bad level", "cases:\n  - {tool: x, expect: low}\n  - tool: x\n    expect: hihg\n", []string{`:4: cases[1].expect: expected one of low, high, critical, deny, got "hihg"`}},
		{"missing expect and tool", "cases:\n  - {args: {}}\n", []string{"cases[0].tool: required", "cases[0].expect: required"}},
		{"unknown field", "cases:\n  - {tool: x, expect: low, expct: high}\n", []string{"cases[0].expct: unknown field"}},
		{"args not a mapping", "cases:\n  - {tool: x, expect: low, args: [1]}\n", []string{"cases[0].args: expected a mapping"}},
		{"non-string key", "cases:\n  - {tool: x, expect: low, args: {a: {1: b}}}\n", []string{"cases[0].args: a: ", "keys must be strings"}},
		{"nan", "cases:\n  - {tool: x, expect: low, args: {a: .nan}}\n", []string{"cases[0].args: a: NaN is not a JSON number"}},
		{"bad time", "cases:\n  - {tool: x, expect: low, now: tomorrow}\n", []string{`cases[0].now: expected an RFC 3339 time`}},
		{"duplicate field", "cases:\n  - {tool: x, expect: low, tool: y}\n", []string{"cases[0].tool"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.yaml)
			_, err := LoadCases(path)
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			var ce *CaseError
			if !errors.As(err, &ce) || ce.File != path {
				t.Errorf("no *CaseError naming the file in %v", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n%v\ndoes not contain %q", err, want)
				}
			}
		})
	}
	if _, err := LoadCases(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestRunCasesReportsDiffs(t *testing.T) {
	p, _ := shippedPolicy(t)
	in := transfer(10001, true)
	results := p.RunCases([]Case{
		{Name: "wrong level", Tool: in.Tool, Args: in.Args, Facts: in.Facts, Now: in.Now, Expect: vocab.LevelLow},
		{Name: "wrong rules", Tool: in.Tool, Args: in.Args, Facts: in.Facts, Now: in.Now, Expect: vocab.LevelHigh, ExpectRules: []string{"very-large"}},
		{Name: "no rules expected", Tool: in.Tool, Args: in.Args, Facts: in.Facts, Now: in.Now, Expect: vocab.LevelHigh, ExpectRules: []string{}},
		{Name: "right", Tool: in.Tool, Args: in.Args, Facts: in.Facts, Now: time.Time{}, Expect: vocab.LevelHigh},
	})
	wants := []string{
		"level: got high, want low; reason: rule large-or-new-payee raised transfer to high",
		"rules: got [large-or-new-payee], want [very-large]",
		"rules: got [large-or-new-payee], want []",
		"",
	}
	for i, r := range results {
		if r.OK != (wants[i] == "") || !strings.HasPrefix(r.Diff, wants[i]) {
			t.Errorf("%s: ok=%v diff=%q, want prefix %q", r.Case.Name, r.OK, r.Diff, wants[i])
		}
	}
}

func loadString(t *testing.T, s string) []Case {
	t.Helper()
	cases, err := LoadCases(writeFile(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cases.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
