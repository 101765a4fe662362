package authz

import (
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
)

// A rule's condition that does not compile is explained in plain words:
// which rule, the column and the text there, and what is wrong, never the
// parser's grammar ("mismatched input", "expecting {", "<EOF>").
func TestCELErrorsNameTheRuleAndColumnInPlainWords(t *testing.T) {
	for _, tc := range []struct{ when, want string }{
		{"args.amount > ", `rule "large", column 15 (the end): the condition ends where a value or name should follow`},
		{"args.amount > 10 and agent == 'x'", `rule "large", column 18 (at "and agent == 'x'"): "and" is not a CEL operator: write &&`},
		{"args.amount = 5", `rule "large", column 13 (at "= 5"): a single "=" is not a CEL operator: write == to compare`},
		{"args.amount => 5", `"=>" is not a CEL operator: write >= for at least`},
		{"agent == 'ci-bot", `rule "large", column 10 (at "'ci-bot"): a string is not closed: its closing quote is missing`},
		{"(args.amount > 1", `rule "large", column 17 (the end): a closing ")" is missing at the end`},
		{"args.amount > 1)", `rule "large", column 16 (at ")"): ")" was not expected here: the condition looks complete before it`},
		{"args.to in ['a', 'b'", `the condition ends too soon: expected one of ] ,`},
		{"args.amount > 1 @", `"@" is not part of CEL's syntax`},
		{"args.amount > 1 ||\n  agent = 'x'", `rule "large", line 2, column 9 (at "= 'x'"): a single "="`},
		{"agent > 5", `rule "large", column 7 (at "> 5"): > cannot combine a string with an int`},
	} {
		_, err := Compile(map[string]config.Tool{"x": {Level: "low", Approvers: []string{"role:treasury"},
			Rules: []config.Rule{{Name: "large", When: tc.when, Level: "high"}}}}, testApprovers, Options{})
		if err == nil {
			t.Errorf("%q compiled", tc.when)
			continue
		}
		got := err.Error()
		if !strings.HasPrefix(got, "tools.x.rules[0].when: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%q:\n got  %s\n want %s", tc.when, got, tc.want)
		}
		for _, raw := range []string{"mismatched", "extraneous", "expecting", "<EOF>", "<input>", "Syntax error", "token recognition", "\n"} {
			if strings.Contains(got, raw) {
				t.Errorf("%q: the error carries the parser's %q: %s", tc.when, raw, got)
			}
		}
	}
}
