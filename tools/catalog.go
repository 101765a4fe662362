// Package tools is the one catalog of the tools an agent sees. Each tool is
// a [Spec]: its MCP definition (name, description, schemas, annotations),
// the fact variables it gives the policy, and two steps. Prepare checks the
// arguments, applies defaults and gathers, without side effects, what the
// policy and the approver need: fact variables, RFC 9396
// authorization_details and a one-line summary. Run then executes the tool
// exactly once with the arguments Prepare returned. The caller (package
// guard) decides in between whether the call runs at once, waits for a
// human, or is denied; this package knows nothing of that.
//
// Specs come from sources. The built-in backends ([New]: the ledger's
// get_balance, list_counterparties, list_transfers and transfer, a deploy
// command, a secrets directory) are one source; each upstream MCP server
// (package tools/upstream) is another, whose specs change when the upstream's
// tool list does. Adding a tool touches its source and nothing else.
package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
)

// Spec is one guarded tool, from whichever source: a built-in backend or an
// upstream MCP server.
type Spec struct {
	// Def is what the agent sees: name, description, JSON input schema
	// and annotations.
	Def mcp.Tool
	// Source names where the tool comes from: "builtin", "guard" or the
	// upstream's name.
	Source string
	// Facts names the fact variables Prepare supplies to the policy.
	Facts []string
	// Pure says Run changes nothing anywhere: a built-in tool that only
	// reads. The guard then records a routine call once, after it ran,
	// rather than before and after, since nothing needs undoing or
	// explaining if the process dies in between: the agent gets the result
	// only once its record is durable. An upstream's readOnlyHint is the
	// upstream's claim, not a guarantee, so upstream tools are never Pure.
	Pure bool
	// Prepare validates the (already schema-valid) arguments semantically,
	// applies defaults, and gathers facts and authorization details. It
	// has no side effects. Bad input is an *ArgError.
	Prepare func(ctx context.Context, args map[string]any) (*Call, error)
	// Run executes the tool once with call.Args.
	Run func(ctx context.Context, call *Call) (*Result, error)

	// Held, when set, holds the tool back: it is not offered to agents
	// (tools/list), and the guard asks it first about every call of the
	// tool, before the schema and the policy. An error refuses the call,
	// recorded, with its text, and nothing runs; nil says the tool was let
	// go meanwhile, and the catalog now has it as offered. An upstream tool
	// whose listing differs from its pinned definition is held.
	Held func(ctx context.Context) error

	// Recover, when set, tells what became of a call whose run started
	// but whose outcome was never recorded, because the process died: the
	// result the run gave (done), or that it never took effect (!done), in
	// which case running it now, under the same call.ID, is its one run.
	// A backend sets it only when it keeps its effects under the call id in
	// the same transaction that makes them. Without it the outcome is
	// unknown and the call is never run again.
	Recover func(ctx context.Context, call *Call) (res *Result, done bool, err error)
}

// ReadOnly reports whether the tool declares that it changes nothing.
func (s *Spec) ReadOnly() bool {
	h := s.Def.Annotations.ReadOnlyHint
	return h != nil && *h
}

// Call is a prepared tool call.
type Call struct {
	// Args are the validated arguments after defaults: exactly what is
	// approved and run.
	Args map[string]any
	// Agent is the authenticated agent making the call; the guard sets it.
	Agent string
	// ID names the call for its backend, unique per call; the guard sets
	// it before Run. A backend that keeps it with its effect can tell after
	// a crash whether the call took effect (see Spec.Recover).
	ID string
	// Facts are the policy's fact variables, e.g.
	// {"counterparty": {"name": "Vendor X", "known": false, "exists": false, "first_seen": ""}}.
	Facts map[string]any
	// Details is the RFC 9396 authorization_details array the approver is
	// shown and signs over.
	Details json.RawMessage
	// Summary is short human text, e.g. "Pay USD 500,000.00 from operating to Vendor X".
	Summary string
	// Value is what the call moves, for tools that move value (transfer):
	// the policy sees the sums of earlier calls in rolling windows.
	Value *Value
	// Approval is the approval token (package token) of a countersigned
	// call, which the guard sets once the humans approved and before Run.
	// A tool that hands the action to another system passes it on, so
	// that system can check for itself what was approved.
	Approval string
}

// Value is an amount moved to a counterparty.
type Value struct {
	Amount       float64 // in major units, as the agent wrote it
	Currency     string
	Counterparty string // as the ledger names it
}

// Result is what a tool returns.
type Result struct {
	// Content is returned to the agent as structured JSON, unless MCP is set.
	Content any
	// MCP, when set, is returned to the agent exactly as it is: an upstream
	// tool's own result (content, structuredContent, isError).
	MCP *mcp.CallToolResult
	// Record is kept in the audit log; never a secret value.
	Record any
}

// ArgError is bad input, naming the argument.
type ArgError struct{ Field, Msg string }

func (e *ArgError) Error() string { return e.Field + ": " + e.Msg }

func argErr(field, format string, args ...any) *ArgError {
	return &ArgError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Catalog holds every tool an agent can call, by name. It is safe for
// concurrent use: upstream sources replace their specs while calls run.
type Catalog struct {
	mu       sync.RWMutex
	specs    map[string]*Spec
	watchers []func()
	closers  []func() error
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog { return &Catalog{specs: map[string]*Spec{}} }

// Replace makes specs the whole contribution of source: tools of that
// source not in specs disappear. A name another source already has is
// refused and nothing changes. Watchers are told after the change.
func (c *Catalog) Replace(source string, specs []*Spec) error {
	c.mu.Lock()
	seen := map[string]bool{}
	for _, s := range specs {
		name := s.Def.Name
		if seen[name] {
			c.mu.Unlock()
			return fmt.Errorf("tools: %s offers %q twice", source, name)
		}
		seen[name] = true
		if old, ok := c.specs[name]; ok && old.Source != source {
			c.mu.Unlock()
			return fmt.Errorf("tools: %s: tool name %q is already taken by %s", source, name, old.Source)
		}
	}
	for name, s := range c.specs {
		if s.Source == source {
			delete(c.specs, name)
		}
	}
	for _, s := range specs {
		s.Source = source
		c.specs[s.Def.Name] = s
	}
	watchers := slices.Clone(c.watchers)
	c.mu.Unlock()
	for _, w := range watchers {
		w()
	}
	return nil
}

// OnChange registers f to run after every change of the catalog.
func (c *Catalog) OnChange(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers = append(c.watchers, f)
}

// Specs returns every tool sorted by name.
func (c *Catalog) Specs() []*Spec {
	c.mu.RLock()
	out := make([]*Spec, 0, len(c.specs))
	for _, s := range c.specs {
		out = append(out, s)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Spec) int { return strings.Compare(a.Def.Name, b.Def.Name) })
	return out
}

// Lookup returns the tool called name.
func (c *Catalog) Lookup(name string) (*Spec, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.specs[name]
	return s, ok
}

// closeWith registers what a source holds open, released by Close.
func (c *Catalog) closeWith(f func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closers = append(c.closers, f)
}

// Close releases what the built-in backends hold open (the secrets
// directory). Upstream connections are closed by their own manager.
func (c *Catalog) Close() error {
	c.mu.Lock()
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	var first error
	for _, f := range closers {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Progress reports a running call's progress to its caller.
type Progress func(progress, total float64, message string)

type progressKey struct{}

// WithProgress gives a call's context the way to report progress to its
// caller; transports set it when the caller asked for progress.
func WithProgress(ctx context.Context, p Progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

// ProgressFrom returns the caller's progress reporter, or nil.
func ProgressFrom(ctx context.Context) Progress {
	p, _ := ctx.Value(progressKey{}).(Progress)
	return p
}
