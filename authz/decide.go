package authz

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
	"github.com/countersign/countersign/vocab"
)

// Input is one tool call as the policy sees it.
type Input struct {
	Tool  string
	Agent string
	Args  map[string]any // JSON-decoded (numbers are float64)
	// Facts holds the tool's fact variables, each a JSON-like map, e.g.
	// {"counterparty": {"known": false}}. A fact a rule needs but that is
	// missing here denies the call unless the rule guards it with has().
	Facts map[string]any
	Now   time.Time // zero means time.Now()
	// ReadOnly is the tool's readOnlyHint, which sets the default level of
	// an upstream tool the configuration does not list.
	ReadOnly bool
	// Usage holds the usage variable (see the package comment); nil makes
	// a rule that uses it fail closed.
	Usage map[string]any
}

// Decision is the policy's answer for one call.
type Decision struct {
	Level vocab.Level
	// Rules names the rules that matched at the deciding level (or the rule
	// that failed to evaluate); empty when the base level stands.
	Rules  []string
	Reason string // for people and the audit log
	// Approvers are the approver ids allowed to approve, sorted; set for
	// high and critical only.
	Approvers []string
	// Quorum is the number of distinct approvers needed: 1 for high, the
	// configured quorum (default 2) for critical, 0 otherwise.
	Quorum int
	// UserVerification is "required" for critical, else the tool's setting
	// (default "preferred").
	UserVerification vocab.UserVerification
	Timeout          time.Duration // approval lifetime
	Wait             string        // "block" | "poll"
	// Grant, at high only, is what the tool allows of standing grants
	// (nil: none): the approver of this call's request may be offered one.
	Grant *GrantTerms
	// Batchable: the request may be approved together with others in one
	// tap. Only ever at high: a critical call keeps its own taps.
	Batchable bool
	// PolicySHA256 names the policy that decided, when its caller knows it
	// (a server that reloads its policy); empty: the audit log's current.
	PolicySHA256 string
}

// UsageKeys returns the fields of the usage variable.
func UsageKeys() []string {
	return []string{"calls_10m", "calls_1h", "agent_amount_1h", "agent_amount_24h", "agent_payee_amount_24h", "total_amount_24h"}
}

// NoUsage is the usage of an agent that has done nothing yet, with the
// fields of give set: what policy tests assume unless they say otherwise.
func NoUsage(give map[string]any) map[string]any {
	keys := UsageKeys()
	u := make(map[string]any, len(keys))
	for _, k := range keys {
		u[k] = 0.0
	}
	for k, v := range give {
		u[k] = v
	}
	return u
}

// Decide evaluates the policy for one call. It never panics and never
// returns an error: anything that goes wrong denies the call, and Reason
// says why.
func (p *Policy) Decide(in Input) (d Decision) {
	defer func() {
		if v := recover(); v != nil {
			if p != nil && p.log != nil {
				p.log.Error("authz: policy evaluation panicked; denying", "tool", in.Tool, "panic", v)
			}
			d = deny(nil, fmt.Sprintf("%s: policy evaluation failed (%v); denied (fail closed)", in.Tool, v))
		}
	}()
	if p == nil {
		return deny(nil, "no policy loaded; denied (fail closed)")
	}
	t, baseWhy, ok := p.lookup(in.Tool, in.ReadOnly)
	if !ok {
		return deny(nil, fmt.Sprintf("unknown tool %q: not in the configuration; denied", in.Tool))
	}
	if t.base == rankDeny {
		return deny(nil, baseWhy)
	}

	act := activation{in: &in, facts: t.facts}
	if act.in.Args == nil {
		act.in.Args = map[string]any{}
	}
	if act.in.Now.IsZero() {
		act.in.Now = time.Now()
	}
	act.now = types.Timestamp{Time: act.in.Now}

	// Every rule is evaluated (until one denies), so a rule that cannot be
	// evaluated denies the call whatever the order of the rules.
	level := t.base
	var buf [8]*rule
	matched := buf[:0]
	for i := range t.rules {
		r := &t.rules[i]
		out, _, err := r.prg.Eval(&act)
		if err != nil {
			return deny([]string{r.name}, fmt.Sprintf("%s: rule %s failed to evaluate: %v; denied (fail closed)", t.name, r.name, err))
		}
		b, isBool := out.(types.Bool)
		if !isBool {
			return deny([]string{r.name}, fmt.Sprintf("%s: rule %s returned %s, not a bool; denied (fail closed)", t.name, r.name, out.Type()))
		}
		if !b {
			continue
		}
		if r.level > level {
			level = r.level
			matched = matched[:0]
		}
		matched = append(matched, r)
		if level == rankDeny {
			break
		}
	}

	d = Decision{
		Level:            levels[level],
		UserVerification: t.uv,
		Timeout:          t.timeout,
		Wait:             t.wait,
	}
	switch len(matched) {
	case 0:
		d.Reason = baseWhy
	case 1:
		d.Rules = []string{matched[0].name}
		d.Reason = matched[0].raised
	default:
		d.Rules = make([]string, len(matched))
		for i, r := range matched {
			d.Rules[i] = r.name
		}
		d.Reason = fmt.Sprintf("rules %s raised %s to %s", strings.Join(d.Rules, ", "), t.name, d.Level)
	}
	switch level {
	case rankDeny:
		return deny(d.Rules, d.Reason)
	case rankHigh, rankCritical:
		approvers, quorum := t.approvers, 0
		gotApprovers := false
		for _, r := range matched {
			if !gotApprovers && r.approvers != nil {
				approvers, gotApprovers = r.approvers, true
			}
			if quorum == 0 && r.quorum > 0 {
				quorum = r.quorum
			}
		}
		d.Approvers = slices.Clone(approvers)
		if level == rankHigh {
			d.Quorum = 1
			d.Grant = t.grants
			d.Batchable = t.batchable
		} else {
			d.UserVerification = vocab.UVRequired
			d.Quorum = cmp(quorum, t.quorum, DefaultCriticalQuorum)
		}
	}
	return d
}

// cmp returns the first positive value.
func cmp(vs ...int) int {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

func deny(rules []string, reason string) Decision {
	return Decision{Level: vocab.LevelDeny, Rules: rules, Reason: reason}
}

// activation hands CEL the call's variables without building a map per call.
type activation struct {
	in    *Input
	now   types.Timestamp
	facts []string
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "args":
		return a.in.Args, true
	case "agent":
		return types.String(a.in.Agent), true
	case "tool":
		return types.String(a.in.Tool), true
	case "now":
		return a.now, true
	case "usage":
		if a.in.Usage == nil {
			return nil, false // a rule that needs usage fails closed
		}
		return a.in.Usage, true
	}
	if !slices.Contains(a.facts, name) {
		return nil, false
	}
	v, ok := a.in.Facts[name]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

func (a *activation) Parent() interpreter.Activation { return nil }
