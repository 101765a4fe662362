package authz

import (
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"github.com/countersign/countersign/vocab"
)

// Recorded is one decision as the audit log records it.
type Recorded struct {
	Tool, Agent string
	// Args are the logged arguments, JSON-decoded (numbers float64); nil
	// when the log redacts them.
	Args  map[string]any
	Level vocab.Level // the level the call was given
	Rules []string    // the rules the log says decided it (Decision.Rules)
	// Requirement is what an approval request recorded; nil for a call.
	Requirement *Requirement
	// Usage is the usage variable the decision saw, when the log kept it;
	// nil leaves it unknown.
	Usage map[string]any
	// Granted says a standing grant let the call through (grant_id).
	Granted bool
}

// Requirement is what an approval needs: its eligible approvers, how many
// of them, and whether they must be user-verified.
type Requirement struct {
	Approvers        []string
	Quorum           int
	UserVerification vocab.UserVerification
	Batchable        bool // may be approved in a batch
}

// ReplayError says how a logged decision contradicts the policy.
type ReplayError struct {
	Tool string
	Msg  string
}

func (e *ReplayError) Error() string { return e.Tool + ": " + e.Msg }

// Replay checks a logged decision against the policy. The log does not
// keep the facts a backend supplied (counterparty.known, say) nor the
// exact instant of the decision, so rules are evaluated with facts and now
// unknown: a rule whose outcome depends on them could have gone either way
// and is not held against the log, while a rule that the logged arguments
// settle must have gone that way. Replay fails when
//
//   - the tool is not in the policy, or the level is below the tool's;
//   - a rule the log names does not exist, does not raise to the logged
//     level, or is false on the logged arguments whatever the facts;
//   - a rule holds on the logged arguments whatever the facts and raises
//     above the logged level, or to it without being named;
//   - a rule cannot be evaluated on the logged arguments, whatever the
//     facts: the policy would have denied the call (fail closed);
//   - for an approval request, the approvers, quorum, user-verification
//     requirement or batchability differ from what the level and the
//     rules give.
func (p *Policy) Replay(r Recorded) error {
	fail := func(format string, args ...any) error {
		return &ReplayError{Tool: r.Tool, Msg: fmt.Sprintf(format, args...)}
	}
	t := p.tools[r.Tool]
	if t == nil {
		return fail("not a tool of this policy")
	}
	level, ok := rankOf(r.Level)
	if !ok {
		return fail("logged level %q is not a level", r.Level)
	}
	if level < t.base {
		return fail("the policy puts the tool at %s; the log says %s", levels[t.base], r.Level)
	}
	if r.Granted {
		if err := t.replayGrant(level); err != "" {
			return fail("%s", err)
		}
	}
	var named []*rule
	for _, name := range r.Rules {
		i := slices.IndexFunc(t.rules, func(x rule) bool { return x.name == name })
		if i < 0 {
			return fail("the log names rule %q, which the policy does not have", name)
		}
		if t.rules[i].level != level {
			return fail("the log names rule %s, which raises to %s, for a call at %s", name, levels[t.rules[i].level], r.Level)
		}
		named = append(named, &t.rules[i])
	}
	if len(named) == 0 && level != t.base {
		return fail("at %s, above the tool's level %s, but the log names no rule that raised it", r.Level, levels[t.base])
	}
	// The worst contradiction first: a rule that raises highest above
	// the logged level says most about what the call should have been.
	var above *rule
	var other error
	for i := range t.rules {
		ru := &t.rules[i]
		holds, settled, err := t.replayRule(ru, r)
		isNamed := slices.Contains(named, ru)
		switch {
		case err != nil && settled:
			return fail("rule %s cannot be evaluated on the logged arguments (%v): the policy would have denied the call", ru.name, err)
		case !settled:
		case holds && ru.level > level:
			if above == nil || ru.level > above.level {
				above = ru
			}
		case holds && ru.level == level && !isNamed && other == nil:
			other = fail("rule %s holds on the logged arguments but is not among the rules the log names", ru.name)
		case !holds && isNamed && other == nil:
			other = fail("the log names rule %s, which is false on the logged arguments", ru.name)
		}
	}
	if above != nil {
		return fail("rule %s holds on the logged arguments and raises the call to %s; the log says %s", above.name, levels[above.level], r.Level)
	}
	if other != nil {
		return other
	}
	if r.Requirement == nil || (level != rankHigh && level != rankCritical) {
		return nil
	}
	want := t.requirement(level, named)
	got := *r.Requirement
	switch {
	case !sameApprovers(got.Approvers, want.Approvers):
		return fail("eligible approvers [%s], the policy gives [%s]", strings.Join(got.Approvers, ", "), strings.Join(want.Approvers, ", "))
	case got.Quorum != want.Quorum:
		return fail("quorum %d, the policy gives %d", got.Quorum, want.Quorum)
	case got.UserVerification != want.UserVerification:
		return fail("user verification %q, the policy gives %q", got.UserVerification, want.UserVerification)
	case got.Batchable != want.Batchable:
		return fail("batchable %v, the policy gives %v", got.Batchable, want.Batchable)
	}
	return nil
}

// requirement is what Decide gives at level when the rules matched (in
// the tool's rule order).
func (t *tool) requirement(level int, matched []*rule) Requirement {
	req := Requirement{Approvers: t.approvers, UserVerification: t.uv}
	quorum := 0
	gotApprovers := false
	for _, r := range matched {
		if !gotApprovers && r.approvers != nil {
			req.Approvers, gotApprovers = r.approvers, true
		}
		if quorum == 0 && r.quorum > 0 {
			quorum = r.quorum
		}
	}
	if level == rankHigh {
		req.Quorum = 1
		req.Batchable = t.batchable
	} else {
		req.UserVerification = vocab.UVRequired
		req.Quorum = cmp(quorum, t.quorum, DefaultCriticalQuorum)
	}
	return req
}

// replayRule evaluates a rule with facts, now and (when redacted) args
// unknown. settled reports whether the outcome (or error) holds whatever
// the unknowns are.
func (t *tool) replayRule(ru *rule, r Recorded) (holds, settled bool, err error) {
	if ru.replayPrg == nil {
		return false, false, nil // not compiled for replay
	}
	unknown := append(slices.Clone(t.facts), "now")
	vars := map[string]any{"agent": r.Agent, "tool": r.Tool}
	if r.Usage != nil {
		vars["usage"] = r.Usage
	} else {
		unknown = append(unknown, "usage")
	}
	if r.Args != nil {
		vars["args"] = r.Args
	} else {
		unknown = append(unknown, "args")
	}
	var patterns []*cel.AttributePatternType
	for _, name := range unknown {
		patterns = append(patterns, cel.AttributePattern(name))
	}
	act, err := cel.PartialVars(vars, patterns...)
	if err != nil {
		return false, false, err
	}
	out, _, err := ru.replayPrg.Eval(act)
	if types.IsUnknown(out) {
		return false, false, nil
	}
	// An error settles nothing if an unknown could have short-circuited
	// it (error || true is true).
	dependsOnUnknown := slices.ContainsFunc(ru.refs, func(ref string) bool { return slices.Contains(unknown, ref) })
	if err != nil {
		return false, !dependsOnUnknown, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, !dependsOnUnknown, fmt.Errorf("returned %s, not a bool", out.Type())
	}
	return bool(b), true, nil
}

// sameApprovers reports whether the eligible approvers a request recorded
// are those the policy gives: the same ids, and where the policy gives a
// role of the identity provider (role:NAME), the people who held it when
// the request was made, whose ids (idp-..., audit.IdPApproverID) only
// such a role lets in. audit verify checks each one's groups.
func sameApprovers(got, want []string) bool {
	person := func(id string) bool { return strings.HasPrefix(id, "idp-") }
	if !slices.ContainsFunc(want, isRole) {
		return slices.Equal(got, want)
	}
	return slices.Equal(slices.DeleteFunc(slices.Clone(got), person), slices.DeleteFunc(slices.Clone(want), isRole))
}
