package config

import (
	"fmt"
	"slices"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Grants lets an approver, when approving one of a tool's requests, also
// grant for a short time that further calls like it run without a new tap
// (a standing grant). The server proposes the grant's condition from the
// request: the same agent and tool, every argument equal to the request's,
// except those listed in AtMost (numbers, which may be at most the
// request's) and in Free (which may be anything). The zero value (no
// grants: key in mcp.yaml) allows none.
//
//	grants: {max_duration: 15m, max_calls: 10, at_most: [amount], free: [memo, idempotency_key]}
type Grants struct {
	// MaxDuration caps how long a grant may last; the approver picks up to it.
	MaxDuration time.Duration `mapstructure:"max_duration"`
	// MaxCalls caps how many further calls one grant may let through.
	MaxCalls int `mapstructure:"max_calls"`
	// AtMost names numeric arguments a granted call may lower but not raise.
	AtMost []string `mapstructure:"at_most"`
	// Free names arguments a granted call may set to anything (a memo, an
	// idempotency key): they do not change what the call risks.
	Free []string `mapstructure:"free"`
}

// Enabled reports whether the tool allows grants at all.
func (g Grants) Enabled() bool {
	return g.MaxDuration != 0 || g.MaxCalls != 0 || len(g.AtMost) > 0 || len(g.Free) > 0
}

// Bounds on what a policy may allow: a grant is a short delegation, not a
// standing permission.
const (
	MaxGrantDuration = 24 * time.Hour
	MaxGrantCalls    = 1000
)

// validateGrants checks a tool's grants section. Grants are refused where a
// call must always have its own taps (critical or denied tools), where
// there is no approval to extend (ciba, a tool that is never above low),
// and where the audit log could not show what a granted call did
// (redact_args: audit verify checks each granted call's arguments against
// the grant's condition).
func (t Tool) validateGrants(v *validator, p string) {
	g := t.Grants
	if !g.Enabled() {
		return
	}
	p += ".grants"
	switch {
	case t.Level == vocab.LevelCritical:
		v.fail(p, "not allowed on a critical tool: a critical call always needs its quorum of fresh taps")
	case t.Level == vocab.LevelDeny:
		v.fail(p, "not allowed on a denied tool")
	case t.RedactArgs:
		v.fail(p, "not allowed with redact_args: audit verify checks each granted call's arguments against the grant, so they must be in the log")
	case t.Level == vocab.LevelLow && !slices.ContainsFunc(t.Rules, func(r Rule) bool { return r.Level == vocab.LevelHigh }):
		v.fail(p, "has no effect: no rule raises the tool to high, the only level a grant can cover")
	}
	if g.MaxDuration < time.Minute || g.MaxDuration > MaxGrantDuration {
		// The page offers whole minutes.
		v.fail(p+".max_duration", "expected a duration from 1m to %s, such as 15m, got %s", MaxGrantDuration, g.MaxDuration)
	}
	if g.MaxCalls < 1 || g.MaxCalls > MaxGrantCalls {
		v.fail(p+".max_calls", "expected 1 to %d, got %d", MaxGrantCalls, g.MaxCalls)
	}
	seen := map[string]string{}
	for _, list := range []struct {
		key   string
		names []string
	}{{"at_most", g.AtMost}, {"free", g.Free}} {
		for i, n := range list.names {
			np := fmt.Sprintf("%s.%s[%d]", p, list.key, i)
			if n == "" {
				v.fail(np, "required: an argument name")
				continue
			}
			if prev, dup := seen[n]; dup {
				v.fail(np, "%q is already listed at %s", n, prev)
				continue
			}
			seen[n] = np
		}
	}
}
