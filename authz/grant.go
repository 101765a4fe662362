package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"

	"github.com/countersign/countersign/config"
)

// GrantTerms is what a tool's policy allows of standing grants (config
// tools.NAME.grants): an approver approving one of its high requests may
// also let further calls matching a condition derived from that request
// run without a tap, for up to MaxDuration and MaxCalls calls. A
// [Decision] at high carries the tool's terms; nil means no grants.
type GrantTerms struct {
	MaxDuration time.Duration
	MaxCalls    int
	AtMost      []string // numeric arguments a granted call may lower
	Free        []string // arguments a granted call may set to anything
}

// grantTerms checks a tool's grants section against the policy: beyond
// what config checks, the arguments it names must be arguments of the
// tool (when its schema is known), and at_most ones numbers.
func (c *compiler) grantTerms(p string, name string, ct config.Tool, t *tool) *GrantTerms {
	g := ct.Grants
	if !g.Enabled() {
		return nil
	}
	p += ".grants"
	switch {
	case t.base >= rankCritical:
		c.fail(p, "not allowed on a %s tool: a critical call always needs its quorum of fresh taps", ct.Level)
		return nil
	case ct.RedactArgs:
		c.fail(p, "not allowed with redact_args: audit verify checks each granted call's arguments against the grant")
		return nil
	case t.base == rankLow && !slices.ContainsFunc(t.rules, func(r rule) bool { return r.level == rankHigh }):
		c.fail(p, "has no effect: no rule raises %s to high, the only level a grant can cover", name)
		return nil
	case g.MaxDuration < time.Minute || g.MaxCalls < 1:
		c.fail(p, "needs max_duration (at least 1m, such as 15m) and max_calls (such as 10)")
		return nil
	}
	if props, ok := c.argProperties(name); ok {
		for key, names := range map[string][]string{"at_most": g.AtMost, "free": g.Free} {
			for i, n := range names {
				prop, known := props[n]
				switch {
				case !known:
					c.fail(fmt.Sprintf("%s.%s[%d]", p, key, i), "%s has no argument %q (it has %s)", name, n, strings.Join(sortedKeys(props), ", "))
				case key == "at_most" && prop != "number" && prop != "integer":
					c.fail(fmt.Sprintf("%s.%s[%d]", p, key, i), "argument %q is a %s; at_most takes numbers", n, prop)
				}
			}
		}
	}
	return &GrantTerms{MaxDuration: g.MaxDuration, MaxCalls: g.MaxCalls, AtMost: slices.Clone(g.AtMost), Free: slices.Clone(g.Free)}
}

// argProperties returns the JSON Schema type of each top-level argument
// of a tool whose schema is known.
func (c *compiler) argProperties(tool string) (map[string]string, bool) {
	sch, ok := c.opts.Schemas[tool]
	if !ok || len(sch.Args) == 0 {
		return nil, false
	}
	var s struct {
		Properties map[string]struct {
			Type any `json:"type"`
		} `json:"properties"`
	}
	if json.Unmarshal(sch.Args, &s) != nil || s.Properties == nil {
		return nil, false
	}
	out := map[string]string{}
	for n, p := range s.Properties {
		t, _ := p.Type.(string)
		out[n] = t
	}
	return out, true
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ProposeGrant derives, from one request, the condition a grant on it
// would hold later calls to: the same agent and tool; each argument the
// request has equal to its value, except AtMost ones (at most its value)
// and Free ones (anything); and no argument the request lacks unless it is
// Free. For a transfer:
//
//	agent == "ci" && tool == "transfer" && args.amount <= 500 && args.currency == "USD" &&
//	  args.from == "operating" && args.to == "Acme" && args.all(k, k in ["amount", "currency", "from", "to", "idempotency_key", "memo"])
//
// It fails, and no grant is offered, when an argument to pin is not a
// string, number, boolean or null (a list or object: list it under free),
// or an AtMost argument is not a number. The condition is compiled and
// checked to hold for the request itself before it is offered.
func ProposeGrant(terms *GrantTerms, agent, tool string, args map[string]any) (string, error) {
	if terms == nil {
		return "", errors.New("the tool allows no grants")
	}
	parts := []string{"agent == " + celString(agent), "tool == " + celString(tool)}
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	allowed := slices.Clone(keys)
	for _, k := range keys {
		if slices.Contains(terms.Free, k) {
			continue
		}
		v := args[k]
		if slices.Contains(terms.AtMost, k) {
			f, ok := v.(float64)
			if !ok {
				return "", fmt.Errorf("argument %q is listed under at_most but is not a number", k)
			}
			parts = append(parts, celField(k)+" <= "+celNumber(f))
			continue
		}
		lit, err := celLiteral(v)
		if err != nil {
			return "", fmt.Errorf("argument %q: %v; list it under free to leave it open", k, err)
		}
		parts = append(parts, celField(k)+" == "+lit)
	}
	for _, f := range terms.Free {
		if !slices.Contains(allowed, f) {
			allowed = append(allowed, f)
		}
	}
	names := make([]string, len(allowed))
	for i, k := range allowed {
		names[i] = celString(k)
	}
	parts = append(parts, "args.all(k, k in ["+strings.Join(names, ", ")+"])")
	cond := strings.Join(parts, " && ")
	c, err := CompileCondition(cond)
	if err != nil {
		return "", fmt.Errorf("the proposed condition does not compile: %v", err)
	}
	if ok, err := c.Match(agent, tool, args); err != nil || !ok {
		return "", fmt.Errorf("the proposed condition does not hold for its own request (%v)", err)
	}
	return cond, nil
}

// celReserved are CEL's reserved words, which cannot follow args. as a
// field name.
var celReserved = []string{"as", "break", "const", "continue", "else", "false", "for", "function", "if",
	"import", "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while"}

func celField(k string) string {
	if identPattern.MatchString(k) && !slices.Contains(celReserved, k) {
		return "args." + k
	}
	return "args[" + celString(k) + "]"
}

// celString is a CEL string literal of s. Everything that is not a
// printable character is escaped, so the page shows the condition as the
// key signs it (no bidi control can reorder what the approver reads).
func celString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x80 && unicode.IsPrint(r), r >= 0x80 && unicode.IsPrint(r) && !mustEscapeRune(r):
			b.WriteRune(r)
		case r <= 0xFFFF:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// mustEscapeRune: format characters (bidi controls, zero-width joiners)
// print as nothing, or change how the rest reads.
func mustEscapeRune(r rune) bool { return unicode.Is(unicode.Cf, r) }

func celNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func celLiteral(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "null", nil
	case string:
		return celString(v), nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return celNumber(v), nil
	}
	return "", fmt.Errorf("a %T cannot be pinned", v)
}

// Condition is a compiled grant condition.
type Condition struct {
	prg cel.Program
}

// conditionVars are the only variables a grant condition may use: what
// the audit log records of every call, so that audit verify can evaluate
// it offline.
var conditionVars = []string{"agent", "tool", "args"}

var baseEnv = sync.OnceValues(newEnv)

// newEnv is the environment every rule and grant condition compiles in.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.CrossTypeNumericComparisons(true),
		cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("agent", cel.StringType),
		cel.Variable("tool", cel.StringType),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("usage", cel.MapType(cel.StringType, cel.DynType)),
	)
}

// CompileCondition compiles a grant condition in the policy's CEL
// environment. It must be a bool expression over agent, tool and args only.
func CompileCondition(expr string) (*Condition, error) {
	env, err := baseEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(celErrors("", expr, iss))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be a bool expression, got %s", ast.OutputType())
	}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		// Other names are a comprehension's own variables.
		if slices.Contains(builtinVars, ref.Name) && !slices.Contains(conditionVars, ref.Name) {
			return nil, fmt.Errorf("refers to %s; a grant condition may use only %s", ref.Name, strings.Join(conditionVars, ", "))
		}
	}
	prg, err := env.Program(ast, cel.CostLimit(CostLimit))
	if err != nil {
		return nil, err
	}
	return &Condition{prg: prg}, nil
}

// Match evaluates the condition for one call. An error (a missing field,
// a type mismatch) is no match: the caller fails closed.
func (c *Condition) Match(agent, tool string, args map[string]any) (bool, error) {
	if args == nil {
		args = map[string]any{}
	}
	out, _, err := c.prg.Eval(map[string]any{"agent": agent, "tool": tool, "args": args})
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("returned %s, not a bool", out.Type())
	}
	return bool(b), nil
}

// replayGrant says why a call a grant let through at level could not have
// been, or "".
func (t *tool) replayGrant(level int) string {
	switch {
	case t.grants == nil:
		return "a standing grant let the call through, but the policy allows no grants on the tool"
	case level != rankHigh:
		return fmt.Sprintf("a standing grant let the call through at %s; grants cover high only", levels[level])
	}
	return ""
}
