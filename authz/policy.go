// Package authz decides, for one tool call, whether it runs at once, waits
// for human approval, or never runs.
//
// A tool has a base level and rules. Levels are ordered
//
//	low < high < critical < deny
//
// and each rule is a CEL expression that, when true, raises the call to the
// rule's level. The highest level of any matching rule wins, and the
// decision names every matching rule at that level; approvers and quorum
// come from the first of those rules that sets them, else from the tool.
// High needs one approver; critical needs a quorum (default 2) of distinct
// approvers, each with user verification. A rule must name a level above its
// tool's (rules only raise), except on a tool switched off with level deny,
// whose rules are checked but not evaluated. A rule sees these variables:
//
//	args   map(string, dyn)  the call's JSON arguments (numbers are doubles)
//	agent  string            the authenticated agent
//	tool   string            the tool's name
//	now    timestamp         the time of the call
//	usage  map(string, dyn)  what came before this call, in rolling windows:
//	                           calls_10m, calls_1h         this agent's calls of this tool
//	                           agent_amount_1h, agent_amount_24h
//	                                                       this agent's amounts, same tool and currency
//	                           agent_payee_amount_24h      the same, to the same counterparty
//	                           total_amount_24h            every agent's, same tool and currency
//	                         Amounts are in major units and count executed calls
//	                         and calls still waiting for approval, never this one:
//	                         write args.amount + usage.agent_payee_amount_24h > 10000.
//
// plus the fact variables the tool's backend supplies (see [Options.Facts]),
// each a map(string, dyn), e.g. counterparty.known for transfer. Numbers
// compare across types, so args.amount > 10000 works on a double.
//
// Evaluation fails closed: a rule that cannot be evaluated (a missing
// argument or fact, a type mismatch, division by zero, a runaway
// comprehension that exceeds the cost limit) denies the call, and the reason
// names the tool, the rule and the CEL error. A rule that should tolerate a
// missing field must say so with has(), e.g.
//
//	has(args.amount) && args.amount > 10000
//
// Everything is checked by [Compile] at start: CEL syntax, unknown
// variables, non-bool results (a bare dyn such as args.flag is refused; write
// args.flag == true), level names, approvers and quorum; and, for a tool
// whose [Schema] is known, the fields a rule names and the types it
// compares them with. Errors name the key
// path, e.g. tools.transfer.rules[1].when, and carry CEL's line and column.
// [Policy.Decide] does no parsing; it evaluates the programs compiled here.
package authz

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// Options are the parts of a policy that come from outside the tools section.
type Options struct {
	// DefaultTimeout is the approval lifetime when a tool sets none
	// (config approval.timeout). Zero means 5 minutes.
	DefaultTimeout time.Duration
	// Facts names, per tool, the fact variables its backend supplies, e.g.
	// {"transfer": {"counterparty"}, "read_secret": {"secret"}}. Rules may
	// refer only to the facts of their own tool.
	Facts map[string][]string
	// Schemas, per tool, type the arguments and facts its rules see; a
	// tool without one sees maps of dynamic values. See [Schema].
	Schemas map[string]Schema
	// Upstreams give the level of upstream tools that have no entry under
	// tools: default_level when set, else low for a tool annotated
	// read-only and high for any other, approved by the upstream's
	// approvers (default: every approver).
	Upstreams []config.Upstream
	// Logger hears of policy evaluations that panic and of rules kept but
	// not evaluated; default: discard.
	Logger *slog.Logger
	// IdentityRoles is identity.roles: each role that people of the
	// company's identity provider hold through its groups. A role:NAME
	// it maps stays in a decision's approvers as "role:NAME", for the
	// approval service to turn into the people who hold it when the
	// request is made; the role needs no approver in the list then.
	IdentityRoles map[string][]string

	// replay also builds, per rule, a program for Policy.Replay.
	replay bool
}

// Wait modes, as written in the config.
const (
	WaitBlock = "block"
	WaitPoll  = "poll"
)

// DefaultCriticalQuorum is the number of distinct approvers a critical call
// needs when neither its rule nor its tool sets a quorum.
const DefaultCriticalQuorum = 2

// CostLimit bounds the work one rule may do in one evaluation. It is far
// above what a sensible rule needs and stops a comprehension over a huge
// agent-supplied list from holding a call (and a worker) hostage.
const CostLimit = 1_000_000

const defaultTimeout = 5 * time.Minute

// Variables every rule may use; fact variables may not take these names.
var builtinVars = []string{"args", "agent", "tool", "now", "usage"}

// ErrInvalid is matched (errors.Is) by every error Compile returns.
var ErrInvalid = errors.New("invalid policy")

// CompileError is one problem found by Compile, at a config key path such as
// tools.transfer.rules[1].when.
type CompileError struct {
	Path string
	Msg  string
}

func (e *CompileError) Error() string { return e.Path + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true for every CompileError.
func (e *CompileError) Is(target error) bool { return target == ErrInvalid }

// Level ranks, lowest first; the index is the order.
var levels = []vocab.Level{vocab.LevelLow, vocab.LevelHigh, vocab.LevelCritical, vocab.LevelDeny}

const (
	rankLow = iota
	rankHigh
	rankCritical
	rankDeny
)

func rankOf(level vocab.Level) (int, bool) {
	i := slices.Index(levels, level)
	return i, i >= 0
}

// Policy is a compiled, immutable policy; Decide is safe for concurrent use.
type Policy struct {
	tools     map[string]*tool
	upstreams []upstreamDefault
	log       *slog.Logger
}

// upstreamDefault is the policy of an upstream's unlisted tools.
type upstreamDefault struct {
	name, prefix    string
	readOnly, other *tool
	why             string // "default_level", or "" to say whether it is read-only
}

type tool struct {
	name      string
	base      int
	rules     []rule   // only rules that can raise the base level, config order
	approvers []string // resolved ids, sorted
	quorum    int      // 0 = level default
	uv        vocab.UserVerification
	timeout   time.Duration
	wait      string
	batchable bool // config's batchable: its high calls may be approved in a batch
	facts     []string
	baseWhy   string      // Reason when no rule raises the base level
	grants    *GrantTerms // nil: no standing grants (grant.go)
}

type rule struct {
	index     int    // in the config's rules list
	name      string // Name, or rules[i]
	level     int
	prg       cel.Program
	replayPrg cel.Program // partial evaluation with facts and now unknown; with Options.replay
	refs      []string    // the variables the expression refers to
	approvers []string    // resolved, sorted; nil = the tool's
	quorum    int         // 0 = the tool's
	raised    string      // Reason when this rule alone decides
}

var identPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Compile checks and compiles the tools' policies. Every problem found is
// reported, one *CompileError per problem, joined; errors.Is(err,
// ErrInvalid) holds for any of them.
func Compile(tools map[string]config.Tool, approvers []config.Approver, opts Options) (*Policy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := compiler{approvers: approvers, opts: opts}
	base, err := baseEnv()
	if err != nil {
		return nil, fmt.Errorf("authz: building the CEL environment: %w", err)
	}
	c.env = base

	p := &Policy{tools: make(map[string]*tool, len(tools)), log: opts.Logger}
	names := make([]string, 0, len(tools))
	for name := range tools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if t := c.tool(name, tools[name]); t != nil {
			p.tools[name] = t
		}
	}
	for i, u := range opts.Upstreams {
		if d, ok := c.upstreamDefault(i, u); ok {
			p.upstreams = append(p.upstreams, d)
		}
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return p, nil
}

func (c *compiler) upstreamDefault(i int, u config.Upstream) (upstreamDefault, bool) {
	p := fmt.Sprintf("upstreams[%d]", i)
	entries := u.Approvers
	if len(entries) == 0 {
		for _, a := range c.approvers {
			entries = append(entries, a.ID)
		}
	}
	nerr := len(c.errs)
	approvers := c.resolve(p+".approvers", entries)
	d := upstreamDefault{name: u.Name, prefix: u.Prefix}
	mk := func(level vocab.Level) *tool {
		rank, ok := rankOf(level)
		if !ok {
			c.fail(p+".default_level", "expected one of %s, got %q", levelList(), level)
			return nil
		}
		if (rank == rankHigh || rank == rankCritical) && len(approvers) == 0 {
			c.fail(p, "its tools that are not read-only default to %s, which needs approvers: declare approvers, or set default_level", level)
		}
		c.checkDefaultQuorum(p, rank, approvers)
		t := &tool{base: rank, approvers: approvers, uv: vocab.UVPreferred, wait: WaitBlock, timeout: c.opts.DefaultTimeout}
		if t.timeout <= 0 {
			t.timeout = defaultTimeout
		}
		return t
	}
	if u.DefaultLevel != "" {
		d.readOnly = mk(u.DefaultLevel)
		d.other, d.why = d.readOnly, "default_level"
	} else {
		d.readOnly, d.other = mk(vocab.LevelLow), mk(vocab.LevelHigh)
	}
	return d, len(c.errs) == nerr
}

// UsesUsage reports whether any rule of tool refers to the usage
// variable, so that its decisions record what usage they saw.
func (p *Policy) UsesUsage(tool string) bool {
	t, ok := p.tools[tool]
	if !ok {
		return false
	}
	for _, r := range t.rules {
		if slices.Contains(r.refs, "usage") {
			return true
		}
	}
	return false
}

// lookup returns the policy of a tool: its own entry under tools, else its
// upstream's default.
func (p *Policy) lookup(name string, readOnly bool) (t *tool, why string, ok bool) {
	if t, ok := p.tools[name]; ok {
		return t, t.baseWhy, true
	}
	for _, d := range p.upstreams {
		if len(name) <= len(d.prefix) || name[:len(d.prefix)] != d.prefix {
			continue
		}
		t, kind := d.other, "not annotated read-only"
		if readOnly {
			t, kind = d.readOnly, "annotated read-only"
		}
		if d.why != "" {
			kind = "default_level of upstream " + d.name
		}
		why := fmt.Sprintf("%s is %s by default (%s; not listed under tools)", name, levels[t.base], kind)
		if t.base == rankDeny {
			why = fmt.Sprintf("%s is denied by default (%s; not listed under tools)", name, kind)
		}
		return t, why, true
	}
	return nil, "", false
}

type compiler struct {
	env       *cel.Env
	approvers []config.Approver
	opts      Options
	errs      []error

	badApprovers bool // the current tool names an approver or role that does not resolve
}

func (c *compiler) fail(path, format string, args ...any) {
	c.errs = append(c.errs, &CompileError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// tool compiles one tool's policy: its settings, the environment its
// rules see, its rules, its grants and its approver sets. Every problem is
// reported to c; a tool with any problem compiles to nil.
func (c *compiler) tool(name string, ct config.Tool) *tool {
	p := "tools." + name
	nerr := len(c.errs)
	c.badApprovers = false
	t := c.settings(p, name, ct)
	env, ok := c.factEnv(p, name, t)
	if !ok {
		return nil
	}
	typed, err := c.typedEnv(name, t.facts)
	if err != nil {
		c.fail(p, "schema of %s: %v", name, err)
	}
	seen := map[string]int{}
	for i, cr := range ct.Rules {
		if r, ok := c.rule(p, i, cr, ct, t, env, typed, seen); ok {
			t.rules = append(t.rules, r)
		}
	}

	t.grants = c.grantTerms(p, name, ct, t)
	t.baseWhy = fmt.Sprintf("%s is %s: no rule raised it", name, ct.Level)
	if t.base == rankDeny {
		t.baseWhy = fmt.Sprintf("%s is denied by its configured level", name)
	}
	if !c.badApprovers {
		// With an unknown approver or empty role the sets are incomplete,
		// and a complaint about them would only repeat that error.
		c.checkApprovers(p, t, ct)
	}
	c.warnUnusedQuorum(p, t)
	if len(c.errs) > nerr {
		return nil
	}
	return t
}

// settings checks the tool's own settings (level, user verification,
// wait, timeout, quorum, batchable, approvers) and fills in their defaults.
func (c *compiler) settings(p, name string, ct config.Tool) *tool {
	t := &tool{name: name, quorum: ct.Quorum, uv: ct.UserVerification, timeout: ct.Timeout, wait: ct.Wait, batchable: ct.Batchable}

	base, ok := rankOf(ct.Level)
	if !ok {
		c.fail(p+".level", "expected one of %s, got %q", levelList(), ct.Level)
	}
	t.base = base
	switch t.uv {
	case "":
		t.uv = vocab.UVPreferred
	case vocab.UVRequired, vocab.UVPreferred, vocab.UVDiscouraged:
	default:
		c.fail(p+".user_verification", "expected one of required, preferred, discouraged, got %q", t.uv)
	}
	switch t.wait {
	case "":
		t.wait = WaitBlock
	case WaitBlock, WaitPoll:
	default:
		c.fail(p+".wait", "expected one of block, poll, got %q", t.wait)
	}
	switch {
	case t.timeout < 0:
		c.fail(p+".timeout", "expected a positive duration, got %s", t.timeout)
	case t.timeout == 0:
		t.timeout = c.opts.DefaultTimeout
		if t.timeout <= 0 {
			t.timeout = defaultTimeout
		}
	}
	if t.quorum < 0 {
		c.fail(p+".quorum", "expected 0 (the level's default) or more, got %d", t.quorum)
	}
	if t.batchable && t.base == rankCritical {
		c.fail(p+".batchable", "a critical tool cannot be batchable: each critical call keeps its own tap with user verification")
	}
	t.approvers = c.resolve(p+".approvers", ct.Approvers)
	return t
}

// factEnv checks the tool's fact variables (Options.Facts), records them
// in t.facts, and returns the environment its rules are compiled in: c.env
// with the facts declared. ok is false when they cannot be declared.
func (c *compiler) factEnv(p, name string, t *tool) (env *cel.Env, ok bool) {
	for _, f := range c.opts.Facts[name] {
		if !identPattern.MatchString(f) || slices.Contains(builtinVars, f) || slices.Contains(t.facts, f) {
			c.fail(p, "fact variable %q: expected a unique CEL identifier other than %s", f, strings.Join(builtinVars, ", "))
			continue
		}
		t.facts = append(t.facts, f)
	}
	if len(t.facts) == 0 {
		return c.env, true
	}
	opts := make([]cel.EnvOption, len(t.facts))
	for i, f := range t.facts {
		opts[i] = cel.Variable(f, cel.MapType(cel.StringType, cel.DynType))
	}
	env, err := c.env.Extend(opts...)
	if err != nil {
		c.fail(p, "declaring fact variables %v: %v", t.facts, err)
		return nil, false
	}
	return env, true
}

// rule compiles the tool's rules[i]. ok is false for a rule that is never
// evaluated: one that does not raise the tool's level (an error, unless the
// tool is denied, whose rules are checked for the day it is switched back
// on). seen maps the rule names so far to their index.
func (c *compiler) rule(p string, i int, cr config.Rule, ct config.Tool, t *tool, env, typed *cel.Env, seen map[string]int) (r rule, ok bool) {
	rp := fmt.Sprintf("%s.rules[%d]", p, i)
	r = rule{index: i, name: cr.Name, quorum: cr.Quorum}
	if r.name == "" {
		r.name = fmt.Sprintf("rules[%d]", i)
	} else if j, dup := seen[r.name]; dup {
		c.fail(rp+".name", "%q is already the name of rules[%d]", r.name, j)
	}
	seen[r.name] = i

	level, known := rankOf(cr.Level)
	if !known {
		c.fail(rp+".level", "expected one of %s, got %q", levelList(), cr.Level)
	}
	r.level = level
	if r.quorum < 0 {
		c.fail(rp+".quorum", "expected 0 (the level's default) or more, got %d", r.quorum)
	} else if r.quorum > 1 && known && level != rankCritical {
		c.fail(rp+".quorum", "quorum %d applies only to critical rules; %s needs one approver", r.quorum, cr.Level)
	}
	if cr.Approvers != nil {
		r.approvers = c.resolve(rp+".approvers", cr.Approvers)
	}
	r.prg, r.replayPrg, r.refs = c.program(rp+".when", r.name, env, cr.When)
	if r.prg != nil && typed != nil {
		c.checkTyped(rp+".when", r.name, typed, cr.When, t.name, t.facts)
	}

	if known && level <= t.base {
		if t.base != rankDeny {
			// Its approvers or quorum would silently never apply.
			c.fail(rp+".level", "%s does not raise the tool's level %s; rules only raise", cr.Level, ct.Level)
			return r, false
		}
		// A tool switched off with level: deny keeps its rules checked
		// for the day it is switched back on.
		c.opts.Logger.Warn("authz: tool is denied; its rules are checked but not evaluated", "path", rp)
		return r, false
	}
	r.raised = fmt.Sprintf("rule %s raised %s to %s", r.name, t.name, cr.Level)
	if level == rankDeny {
		r.raised = fmt.Sprintf("rule %s denied %s", r.name, t.name)
	}
	return r, true
}

// program parses and type-checks one rule (named rule in errors), insisting
// on a bool result. It returns the program, the replay program (with
// Options.replay) and the variables the expression refers to.
func (c *compiler) program(path, rule string, env *cel.Env, expr string) (cel.Program, cel.Program, []string) {
	if strings.TrimSpace(expr) == "" {
		c.fail(path, "required: a CEL expression such as args.amount > 10000")
		return nil, nil, nil
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		c.fail(path, "%s", celErrors(rule, expr, iss))
		return nil, nil, nil
	}
	if out := ast.OutputType(); !out.IsExactType(cel.BoolType) {
		c.fail(path, "must be a bool expression, got %s (compare explicitly, e.g. args.flag == true)", out)
		return nil, nil, nil
	}
	prg, err := env.Program(ast,
		cel.CostLimit(CostLimit),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		c.fail(path, "%v", err)
		return nil, nil, nil
	}
	var refs []string
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name != "" && !slices.Contains(refs, ref.Name) {
			refs = append(refs, ref.Name)
		}
	}
	slices.Sort(refs)
	var replayPrg cel.Program
	if c.opts.replay {
		if replayPrg, err = env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptPartialEval)); err != nil {
			c.fail(path, "%v", err)
			return nil, nil, nil
		}
	}
	return prg, replayPrg, refs
}

// resolve turns approver ids and role:NAME entries into sorted, distinct
// approver ids.
func (c *compiler) resolve(path string, entries []string) []string {
	var ids []string
	for i, e := range entries {
		ep := fmt.Sprintf("%s[%d]", path, i)
		if role, isRole := strings.CutPrefix(e, "role:"); isRole {
			n := 0
			for _, a := range c.approvers {
				if slices.Contains(a.Roles, role) {
					ids = append(ids, a.ID)
					n++
				}
			}
			if _, idp := c.opts.IdentityRoles[role]; idp && role != "" {
				ids = append(ids, e)
			} else if role == "" || n == 0 {
				c.badApprovers = true
				c.fail(ep, "no approver has role %q", role)
			}
			continue
		}
		if !slices.ContainsFunc(c.approvers, func(a config.Approver) bool { return a.ID == e }) {
			c.badApprovers = true
			c.fail(ep, "unknown approver %q (expected an approver id or role:NAME)", e)
			continue
		}
		ids = append(ids, e)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// checkApprovers makes sure every level the tool can reach that needs a
// human has someone to ask, and that every critical quorum can be met by
// the approvers it may be paired with at run time.
func (c *compiler) checkApprovers(p string, t *tool, ct config.Tool) {
	if t.base == rankHigh || t.base == rankCritical {
		if len(t.approvers) == 0 {
			c.fail(p+".approvers", "required: level %s needs approvers (ids or role:NAME)", ct.Level)
		}
	}
	critical := t.base == rankCritical
	for _, r := range t.rules {
		if (r.level == rankHigh || r.level == rankCritical) && r.approvers == nil && len(t.approvers) == 0 {
			c.fail(fmt.Sprintf("%s.rules[%d]", p, r.index), "level %s needs approvers: set approvers on the tool or the rule", levels[r.level])
		}
		if r.level == rankCritical {
			critical = true
		}
	}
	if !critical {
		if t.quorum > 1 {
			c.fail(p+".quorum", "quorum %d has no effect: %s never reaches critical, and high needs one approver", t.quorum, t.name)
		}
		return
	}

	// At run time approvers and quorum are each taken from the first
	// matching critical rule that sets them, else from the tool, so any
	// pairing below can occur; each must be satisfiable.
	type approverSet struct {
		path string
		ids  []string
	}
	type quorumOf struct {
		path string
		n    int
	}
	var sets []approverSet
	var quorums []quorumOf
	toolApprovers, toolQuorum := t.base == rankCritical, t.base == rankCritical
	for _, r := range t.rules {
		if r.level != rankCritical {
			continue
		}
		rp := fmt.Sprintf("%s.rules[%d]", p, r.index)
		if r.approvers != nil {
			sets = append(sets, approverSet{rp + ".approvers", r.approvers})
		} else {
			toolApprovers = true
		}
		if r.quorum > 0 {
			quorums = append(quorums, quorumOf{rp + ".quorum", r.quorum})
		} else {
			toolQuorum = true
		}
	}
	if toolApprovers {
		sets = append(sets, approverSet{p + ".approvers", t.approvers})
	}
	if toolQuorum {
		if t.quorum > 0 {
			quorums = append(quorums, quorumOf{p + ".quorum", t.quorum})
		} else {
			quorums = append(quorums, quorumOf{p + ".quorum", DefaultCriticalQuorum})
		}
	}
	for _, q := range quorums {
		for _, s := range sets {
			// A role of the identity provider may be held by any number.
			if len(s.ids) > 0 && q.n > len(s.ids) && !slices.ContainsFunc(s.ids, isRole) {
				c.fail(q.path, "critical quorum %d exceeds the %d distinct approver(s) allowed by %s (%s)",
					q.n, len(s.ids), s.path, strings.Join(s.ids, ", "))
			}
		}
	}
}

// isRole reports whether an approvers entry is a role of the identity
// provider (Options.IdentityRoles) rather than an approver id.
func isRole(id string) bool { return strings.HasPrefix(id, "role:") }

// MayCountersign reports whether some call of tool can need a human's
// countersignature: its level, or a rule's, is high or critical. A tool
// switched off (deny) never does; its rules are not evaluated.
func (p *Policy) MayCountersign(tool string, readOnly bool) bool {
	if p == nil {
		return false
	}
	t, _, ok := p.lookup(tool, readOnly)
	if !ok || t.base == rankDeny {
		return false
	}
	if t.base == rankHigh || t.base == rankCritical {
		return true
	}
	for _, r := range t.rules {
		if r.level == rankHigh || r.level == rankCritical {
			return true
		}
	}
	return false
}

// levelList names the levels for an error message, lowest first.
func levelList() string {
	names := make([]string, len(levels))
	for i, l := range levels {
		names[i] = string(l)
	}
	return strings.Join(names, ", ")
}
