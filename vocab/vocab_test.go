package vocab

import (
	"strings"
	"testing"
)

// The strings are the wire, database and audit-export forms: a changed
// spelling would break every stored log, so each is pinned here.
func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		err  string
		fn   func(string) (string, error)
	}{
		{"low", "low", "", wrap(ParseLevel)},
		{"high", "high", "", wrap(ParseLevel)},
		{"critical", "critical", "", wrap(ParseLevel)},
		{"deny", "deny", "", wrap(ParseLevel)},
		{"High", "", `unknown level "High"`, wrap(ParseLevel)},
		{"", "", `unknown level ""`, wrap(ParseLevel)},
		{"approve", "approve", "", wrap(ParseDecision)},
		{"deny", "deny", "", wrap(ParseDecision)},
		{"approved", "", `unknown decision "approved"`, wrap(ParseDecision)},
		{"required", "required", "", wrap(ParseUserVerification)},
		{"preferred", "preferred", "", wrap(ParseUserVerification)},
		{"discouraged", "discouraged", "", wrap(ParseUserVerification)},
		{"always", "", `unknown user verification "always"`, wrap(ParseUserVerification)},
		{"pending", "pending", "", wrap(ParseState)},
		{"approved", "approved", "", wrap(ParseState)},
		{"denied", "denied", "", wrap(ParseState)},
		{"expired", "expired", "", wrap(ParseState)},
		{"cancelled", "cancelled", "", wrap(ParseState)},
		{"executed", "executed", "", wrap(ParseState)},
		{"failed", "failed", "", wrap(ParseState)},
		{"interrupted", "interrupted", "", wrap(ParseState)},
		{"canceled", "", `unknown request state "canceled"`, wrap(ParseState)},
		{"call.allowed", "call.allowed", "", wrap(ParseKind)},
		{"approval.requested", "approval.requested", "", wrap(ParseKind)},
		{"tool.accepted", "tool.accepted", "", wrap(ParseKind)},
		{"audit.rollback_accepted", "audit.rollback_accepted", "", wrap(ParseKind)},
		{"call.ran", "", `unknown audit entry kind "call.ran"`, wrap(ParseKind)},
	} {
		got, err := c.fn(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("parse %q: %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("parse %q: error %v, want %q", c.in, err, c.err)
		case got != c.want:
			t.Errorf("parse %q = %q, want %q", c.in, got, c.want)
		}
	}
}

// Every listed value parses to itself, and no two share a spelling.
func TestListsRoundTrip(t *testing.T) {
	check := func(name string, vals []string, parse func(string) (string, error)) {
		seen := map[string]bool{}
		for _, v := range vals {
			if seen[v] {
				t.Errorf("%s: %q listed twice", name, v)
			}
			seen[v] = true
			if got, err := parse(v); err != nil || got != v {
				t.Errorf("%s: parse %q = %q, %v", name, v, got, err)
			}
		}
	}
	check("Levels", strs(Levels()), wrap(ParseLevel))
	check("Decisions", strs(Decisions()), wrap(ParseDecision))
	check("UserVerifications", strs(UserVerifications()), wrap(ParseUserVerification))
	check("States", strs(States()), wrap(ParseState))
	check("Kinds", strs(Kinds()), wrap(ParseKind))
	if n := len(Kinds()); n != 30 {
		t.Errorf("%d kinds; a new kind goes in Kinds and docs/audit-export.md", n)
	}
}

func wrap[T ~string](f func(string) (T, error)) func(string) (string, error) {
	return func(s string) (string, error) { v, err := f(s); return string(v), err }
}

func strs[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
