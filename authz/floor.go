package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/countersign/countersign/vocab"
)

// ReplayFloor checks a logged approval request that r.Tool's policy
// decided as a floor: a CIBA request, which the caller may narrow to the
// approvers it names (login_hint), and whose details that describe other
// tools' calls are decided by those tools' policies too, the stricter
// winning in every part (higher level, approvers both allow, larger
// quorum, stronger user verification). The log names the other policies'
// rules as tool:rule. ReplayFloor fails when
//
//   - r.Tool is not in the policy, or a tool:rule names no rule of that
//     tool, or one that raises above the logged level;
//   - r.Tool's own rules contradict the log as [Policy.Replay] says,
//     measured against the level they give (the floor), which the logged
//     level may exceed but never fall below;
//   - the requirement is weaker than the floor's: an approver the floor
//     does not allow, a smaller quorum, weaker user verification.
func (p *Policy) ReplayFloor(r Recorded) error {
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
	var named []*rule
	for _, name := range r.Rules {
		other, ruleName, qualified := strings.Cut(name, ":")
		if !qualified {
			i := slices.IndexFunc(t.rules, func(x rule) bool { return x.name == name })
			if i < 0 {
				return fail("the log names rule %q, which the policy does not have", name)
			}
			named = append(named, &t.rules[i])
			continue
		}
		ot := p.tools[other]
		if ot == nil {
			return fail("the log names rule %q of %s, which is not a tool of this policy", ruleName, other)
		}
		i := slices.IndexFunc(ot.rules, func(x rule) bool { return x.name == ruleName })
		if i < 0 {
			return fail("the log names rule %q of %s, which that tool does not have", ruleName, other)
		}
		if ot.rules[i].level > level {
			return fail("the log names rule %s, which raises to %s, for a request at %s", name, levels[ot.rules[i].level], r.Level)
		}
	}
	floor := t.base
	for _, ru := range named {
		if floor != t.base && ru.level != floor {
			return fail("the log names rules of %s at different levels", r.Tool)
		}
		floor = ru.level
	}
	if floor > level {
		return fail("the policy puts the request at %s at least; the log says %s", levels[floor], r.Level)
	}
	for i := range t.rules {
		ru := &t.rules[i]
		holds, settled, err := t.replayRule(ru, r)
		isNamed := slices.Contains(named, ru)
		switch {
		case err != nil && settled:
			return fail("rule %s cannot be evaluated on the logged arguments (%v): the policy would have denied the request", ru.name, err)
		case !settled:
		case holds && ru.level > level:
			return fail("rule %s holds on the logged arguments and raises the request to %s; the log says %s", ru.name, levels[ru.level], r.Level)
		case holds && ru.level >= floor && !isNamed:
			return fail("rule %s holds on the logged arguments but is not among the rules the log names", ru.name)
		case !holds && isNamed:
			return fail("the log names rule %s, which is false on the logged arguments", ru.name)
		}
	}
	if r.Requirement == nil || (floor != rankHigh && floor != rankCritical) {
		return nil
	}
	want := t.requirement(floor, named)
	got := *r.Requirement
	uv := map[vocab.UserVerification]int{vocab.UVDiscouraged: 0, vocab.UVPreferred: 1, vocab.UVRequired: 2}
	for _, a := range got.Approvers {
		if !slices.Contains(want.Approvers, a) {
			return fail("eligible approver %s, whom the policy does not allow", a)
		}
	}
	switch {
	case len(got.Approvers) == 0:
		return fail("no eligible approvers")
	case got.Quorum < want.Quorum:
		return fail("quorum %d, the policy needs at least %d", got.Quorum, want.Quorum)
	case uv[got.UserVerification] < uv[want.UserVerification]:
		return fail("user verification %q, the policy needs %q", got.UserVerification, want.UserVerification)
	}
	return nil
}
