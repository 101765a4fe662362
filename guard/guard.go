// Package guard is the one path of every tool call, from whichever source
// the tool comes (a built-in backend or an upstream MCP server):
//
//	canonical arguments -> schema -> the tool's own checks and facts ->
//	policy -> (a human's countersignature when the policy says so) ->
//	one run -> result
//
// and the audit log hears of each step. The arguments are canonicalised
// once (RFC 8785 bytes and their SHA-256); policy, approval, execution and
// audit all use that one value, and the tool runs on exactly the arguments
// that were approved.
//
// A request for a countersignature that comes from outside MCP (a CIBA
// backchannel request, package ciba) takes the same path to the humans
// through [Guard.Raise], and [Guard.Redeem] issues its approval token once.
// Every approved call's result carries its approval token (package token).
//
// The guard knows MCP only as data (the result type); transports live in
// package server, which hands each call to [Guard.Handle] and, while a call
// waits for a human, keeps its client informed through [Call.Waiting].
package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/gowebpki/jcs"
	"github.com/mark3labs/mcp-go/mcp"
)

// Catalog finds the tool a call names; *tools.Catalog satisfies it.
type Catalog interface {
	Lookup(name string) (*tools.Spec, bool)
}

// Policy decides a call's level; *authz.Policy satisfies it.
type Policy interface {
	Decide(in authz.Input) authz.Decision
	// UsesUsage says a tool's rules read the usage variable; its
	// decisions then record the usage they saw, for replay.
	UsesUsage(tool string) bool
}

// Recorder appends to the audit log; *audit.Log satisfies it. An append
// that fails stops the action it would have recorded.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Approvals gets a human's countersignature; *approval.Service satisfies it.
type Approvals interface {
	Create(ctx context.Context, r approval.NewRequest) (*approval.Request, error)
	Wait(ctx context.Context, id string) (*approval.Request, error)
	BeginExecution(ctx context.Context, id string) error
	Finish(ctx context.Context, id string, ok bool, result json.RawMessage) error
	Poll(ctx context.Context, id, agent string) (*approval.PollStatus, error)
}

// Options wire a Guard.
type Options struct {
	Catalog   Catalog
	Policy    Policy
	Audit     Recorder
	Approvals Approvals // nil: high and critical calls are refused
	// Evidence and Tokens issue approval tokens (package token): the
	// result of a countersigned call carries one in
	// _meta["countersign/approval"], the tool gets it in tools.Call.Approval
	// (an upstream call sends it on), and a backchannel request is redeemed
	// for one. Tokens nil: no tokens.
	Evidence Evidence
	Tokens   Tokens
	// Tools is the tools section of the config, for per-tool settings the
	// guard applies itself (redact_args).
	Tools  map[string]config.Tool
	Logger *slog.Logger
	Now    func() time.Time
	// MaxArgBytes and MaxArgDepth bound a call's arguments (their JSON
	// size and nesting); larger calls are refused before anything else.
	// Zero means 64 KiB and 32.
	MaxArgBytes int
	MaxArgDepth int
	// Limits cap each agent's call rate and waiting approval requests
	// (limits.go).
	Limits Limits
}

// Defaults of Options.MaxArgBytes and MaxArgDepth.
const (
	DefaultMaxArgBytes = 64 << 10
	DefaultMaxArgDepth = 32
)

// Guard runs tool calls. It is safe for concurrent use.
type Guard struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	schemaMu sync.Mutex
	schemas  map[*tools.Spec]*schema

	usage  usageBook
	limits *limiter

	bg   sync.WaitGroup  // poll-mode executions still running
	life context.Context // cancelled by Close: poll-mode waits stop then
	stop context.CancelFunc
}

// New returns a Guard.
func New(opts Options) *Guard {
	if opts.MaxArgBytes <= 0 {
		opts.MaxArgBytes = DefaultMaxArgBytes
	}
	if opts.MaxArgDepth <= 0 {
		opts.MaxArgDepth = DefaultMaxArgDepth
	}
	g := &Guard{opts: opts, log: opts.Logger, now: opts.Now, schemas: map[*tools.Spec]*schema{}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.life, g.stop = context.WithCancel(context.Background())
	g.limits = newLimiter(opts.Limits, opts.Approvals, g.record, g.now)
	if opts.Approvals != nil {
		g.opts.Approvals = countingApprovals{Approvals: opts.Approvals, l: g.limits}
	}
	return g
}

// Close stops waiting for poll-mode approvals and waits for executions
// already under way to finish.
func (g *Guard) Close() {
	g.stop()
	g.bg.Wait()
	g.limits.close()
}

// Call is one tool call as a transport hands it over.
type Call struct {
	Tool  string
	Agent string // authenticated agent; "" is recorded as "unknown"
	// Args are the JSON arguments as the transport decoded them: nil or a
	// JSON object.
	Args any
	// Waiting, when set, keeps the caller informed while its call waits
	// for a human (progress, log messages, elicitation); the function it
	// returns is called when the wait ends.
	Waiting func(ctx context.Context, r *approval.Request) (done func())
}

// Handle runs one call through the whole path and returns what the agent
// gets. It never returns a protocol error: every refusal is a tool error the
// agent can read, and is in the audit log.
func (g *Guard) Handle(ctx context.Context, c Call) *mcp.CallToolResult {
	if c.Agent == "" {
		c.Agent = "unknown"
	}
	if res := g.admitCall(ctx, c.Agent, c.Tool); res != nil {
		return res
	}
	entry := audit.Entry{Agent: c.Agent, Tool: c.Tool}
	spec, ok := g.opts.Catalog.Lookup(c.Tool)
	if !ok {
		return g.Reject(ctx, c.Agent, c.Tool)
	}
	conf := g.opts.Tools[c.Tool]
	args, ok := c.Args.(map[string]any)
	if c.Args == nil {
		args, ok = map[string]any{}, true
	}
	if !ok {
		const msg = "invalid arguments: expected a JSON object"
		entry.Kind, entry.Reason = audit.KindCallRejected, msg
		g.record(ctx, entry)
		return toolError(msg)
	}
	switch d, n := measure(args, g.opts.MaxArgDepth, g.opts.MaxArgBytes); {
	case d > g.opts.MaxArgDepth:
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments nested deeper than %d levels", g.opts.MaxArgDepth),
			"invalid arguments: nested deeper than %d levels", g.opts.MaxArgDepth)
	case n > g.opts.MaxArgBytes:
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments larger than %d bytes", g.opts.MaxArgBytes),
			"invalid arguments: larger than %d bytes", g.opts.MaxArgBytes)
	}
	sch, err := g.schema(spec)
	if err == nil {
		err = sch.validate(args)
	}
	if err != nil {
		return g.rejectArgs(ctx, entry, args, err.Error(), "%v", err)
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		var argErr *tools.ArgError
		if errors.As(err, &argErr) {
			return g.rejectArgs(ctx, entry, args, "invalid arguments: "+err.Error(), "invalid arguments: %v", err)
		}
		// The tool could not gather the facts the policy needs: deny.
		if c, cerr := canonicalize(args); cerr == nil {
			c.setOn(&entry, conf.RedactArgs)
		}
		entry.Kind, entry.Decision, entry.Reason = audit.KindCallDenied, config.LevelDeny, "cannot evaluate policy: "+err.Error()
		g.record(ctx, entry)
		return toolError("refused: cannot evaluate policy: %v", err)
	}
	call.Agent = c.Agent
	// The one canonical form of what is decided, approved, run and audited:
	// Prepare's output, with any defaults it applied.
	canon, err := canonicalize(call.Args)
	if err != nil {
		return g.rejectArgs(ctx, entry, args, err.Error(), "%v", err)
	}
	if len(canon.JSON) > g.opts.MaxArgBytes {
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments larger than %d bytes", g.opts.MaxArgBytes),
			"invalid arguments: larger than %d bytes", g.opts.MaxArgBytes)
	}
	canon.setOn(&entry, conf.RedactArgs)

	// Decide and count under one lock, so that calls made in parallel see
	// each other (a sum split across them is judged as the sum).
	now := g.now()
	keys := keysOf(c.Agent, c.Tool, call.Value)
	g.usage.mu.Lock()
	usage := g.usage.facts(keys, now)
	d := g.opts.Policy.Decide(authz.Input{
		Tool: c.Tool, Agent: c.Agent, Args: call.Args, Facts: call.Facts, Now: now, ReadOnly: spec.ReadOnly(),
		Usage: usage,
	})
	var counted *reservation
	if d.Level != config.LevelDeny {
		counted = g.usage.add(keys, call.Value, now)
	}
	g.usage.mu.Unlock()
	if g.opts.Policy.UsesUsage(c.Tool) {
		entry.Usage, _ = json.Marshal(usage)
	}
	entry.Decision, entry.Rule, entry.Reason = d.Level, strings.Join(d.Rules, ","), d.Reason
	switch d.Level {
	case config.LevelLow:
		if spec.Pure {
			// One entry, after the run: call.executed carries the decision.
			res, _, _ := g.run(ctx, spec, call, entry)
			return res
		}
		entry.Kind = audit.KindCallAllowed
		if !g.record(ctx, entry) {
			g.usage.release(counted)
			return toolError("refused: the audit log cannot record this call")
		}
		res, _, ok := g.run(ctx, spec, call, entry)
		if !ok {
			g.usage.release(counted)
		}
		return res
	case config.LevelHigh, config.LevelCritical:
		ctx, res := g.admitRequest(ctx, c.Agent, c.Tool)
		if res != nil {
			g.usage.release(counted)
			return res
		}
		return g.countersign(ctx, c, spec, call, canon, conf, d, entry, counted)
	default:
		entry.Kind = audit.KindCallDenied
		g.record(ctx, entry)
		return toolError("denied by policy: %s", d.Reason)
	}
}

// rejectArgs records and refuses a call whose arguments are bad. The log
// keeps their SHA-256 and size, never the arguments themselves: what an
// agent sends in a refused call must not grow the signed, append-only log
// by more than a bounded record.
func (g *Guard) rejectArgs(ctx context.Context, entry audit.Entry, args map[string]any, reason, format string, v ...any) *mcp.CallToolResult {
	entry.Args, entry.ArgsRedact = nil, true
	if raw, err := json.Marshal(args); err == nil {
		sum := sha256.Sum256(raw)
		entry.ArgsSHA256 = hex.EncodeToString(sum[:])
		reason += fmt.Sprintf(" (arguments: %d bytes, not kept)", len(raw))
	}
	entry.Kind, entry.Reason = audit.KindCallRejected, reason
	g.record(ctx, entry)
	return toolError(format, v...)
}

// measure walks a decoded JSON value once and returns its nesting depth
// and about how many bytes its JSON takes (strings and keys by their
// length), stopping early once either limit is passed, so that a huge or
// deep value costs little to refuse.
func measure(v any, maxDepth, maxBytes int) (depth, size int) {
	var walk func(v any, d int) int
	walk = func(v any, d int) int {
		if d > maxDepth || size > maxBytes {
			return d
		}
		deepest := d
		switch v := v.(type) {
		case map[string]any:
			size += 2
			for k, x := range v {
				size += len(k) + 4
				deepest = max(deepest, walk(x, d+1))
				if deepest > maxDepth || size > maxBytes {
					break
				}
			}
		case []any:
			size += 2
			for _, x := range v {
				size++
				deepest = max(deepest, walk(x, d+1))
				if deepest > maxDepth || size > maxBytes {
					break
				}
			}
		case string:
			size += len(v) + 2
		default:
			size += 8
		}
		return deepest
	}
	depth = walk(v, 0)
	return depth, size
}

// Reject records and refuses a call to a tool the catalog does not have.
// Transports that look tools up themselves call it for the calls they
// refuse, so that those are in the log too.
func (g *Guard) Reject(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	if agent == "" {
		agent = "unknown"
	}
	g.record(ctx, audit.Entry{Kind: audit.KindCallRejected, Agent: agent, Tool: boundName(tool), Reason: "unknown tool"})
	return toolError("unknown tool %q", boundName(tool))
}

// boundName keeps an agent-chosen tool name short enough for the log.
func boundName(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// run executes the tool once and records what happened. ok says the tool
// succeeded. A result whose record could not be made durable is withheld
// from the agent: nothing is acknowledged that the log could lose.
func (g *Guard) run(ctx context.Context, spec *tools.Spec, call *tools.Call, entry audit.Entry) (_ *mcp.CallToolResult, _ json.RawMessage, ok bool) {
	res, err := safeRun(ctx, spec, call)
	if err != nil {
		entry.Kind, entry.Reason = audit.KindCallFailed, err.Error()
		g.record(ctx, entry)
		msg, _ := json.Marshal(map[string]string{"error": err.Error()})
		return toolError("%s failed: %v", spec.Def.Name, err), msg, false
	}
	var out *mcp.CallToolResult
	var content []byte
	if res.MCP != nil {
		out = res.MCP
		content, err = json.Marshal(res.MCP)
	} else {
		content, err = json.Marshal(res.Content)
		out = mcp.NewToolResultStructured(res.Content, string(content))
	}
	if err != nil {
		entry.Kind, entry.Reason = audit.KindCallFailed, "cannot encode result: "+err.Error()
		g.record(ctx, entry)
		return toolError("%s: cannot encode result: %v", spec.Def.Name, err), nil, false
	}
	entry.Kind = audit.KindCallExecuted
	record := res.Record
	if record == nil && res.MCP != nil {
		sum := sha256.Sum256(content)
		record = map[string]any{"result_sha256": hex.EncodeToString(sum[:]), "is_error": res.MCP.IsError}
	}
	if rec, err := json.Marshal(record); err == nil && record != nil {
		entry.Result = rec
	}
	if !g.record(ctx, entry) {
		msg, _ := json.Marshal(map[string]string{"error": "ran, but the audit log cannot record it"})
		return toolError("%s ran, but the audit log cannot record it; its result is withheld", spec.Def.Name), msg, true
	}
	return out, content, true
}

func safeRun(ctx context.Context, spec *tools.Spec, call *tools.Call) (res *tools.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("tool panicked: %v", p)
		}
	}()
	res, err = spec.Run(ctx, call)
	if err == nil && res == nil {
		err = errors.New("tool returned no result")
	}
	return res, err
}

// record appends to the audit log and reports whether it is durable.
func (g *Guard) record(ctx context.Context, e audit.Entry) bool {
	if _, err := g.opts.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		g.log.Error("audit append failed", "kind", e.Kind, "tool", e.Tool, "err", err)
		return false
	}
	return true
}

// schema compiles a spec's input schema once; specs are replaced, never
// changed, when an upstream's tools change, so the spec pointer is the key.
func (g *Guard) schema(spec *tools.Spec) (*schema, error) {
	g.schemaMu.Lock()
	defer g.schemaMu.Unlock()
	if s, ok := g.schemas[spec]; ok {
		return s, nil
	}
	raw := spec.Def.RawInputSchema
	if raw == nil {
		var err error
		if raw, err = json.Marshal(spec.Def.InputSchema); err != nil {
			return nil, fmt.Errorf("tool %s: input schema: %w", spec.Def.Name, err)
		}
	}
	s, err := compileSchema(spec.Def.Name, raw)
	if err != nil {
		return nil, err
	}
	if len(g.schemas) > 4096 {
		clear(g.schemas) // replaced specs would otherwise pile up
	}
	g.schemas[spec] = s
	return s, nil
}

// canonical is a call's arguments in the one form every step uses.
type canonical struct {
	JSON   []byte // RFC 8785
	SHA256 [32]byte
}

func canonicalize(args map[string]any) (canonical, error) {
	if args == nil {
		args = map[string]any{}
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return canonical{}, fmt.Errorf("invalid arguments: %w", err)
	}
	b, err := jcs.Transform(raw)
	if err != nil {
		return canonical{}, fmt.Errorf("invalid arguments: %w", err)
	}
	return canonical{JSON: b, SHA256: sha256.Sum256(b)}, nil
}

func (c canonical) setOn(e *audit.Entry, redact bool) {
	e.ArgsSHA256 = hex.EncodeToString(c.SHA256[:])
	e.Args, e.ArgsRedact = nil, redact
	if !redact {
		e.Args = json.RawMessage(c.JSON)
	}
}

func toolError(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, args...))
}

func structured(v any) *mcp.CallToolResult {
	text, _ := json.Marshal(v)
	return mcp.NewToolResultStructured(v, string(text))
}
