// Package guard is the one path of every tool call, from whichever source
// the tool comes (a built-in backend or an upstream MCP server):
//
//	canonical arguments -> schema -> the tool's own checks and facts ->
//	policy -> (a human's countersignature when the policy says so) ->
//	one run -> result
//
// and the audit log hears of each step. The arguments are canonicalised
// once, after the tool's Prepare has applied its defaults, into a
// [digest.Args] (RFC 8785 bytes and their SHA-256); the approval request,
// the usage keys, the approval token and every audit entry of the call
// take that one value, and the tool runs on exactly the arguments that
// were approved. Policy and the tool read the decoded arguments those
// bytes were made from.
//
// A request for a countersignature that comes from outside MCP (a CIBA
// backchannel request, package ciba) takes the same path to the humans
// through [Guard.Raise], and [Guard.Redeem] issues its approval token once.
// Every approved call's result carries its approval token (package token).
//
// The guard knows MCP only as data (the result type); transports live in
// package server, which hands each call to [Guard.Handle] and, while a call
// waits for a human, keeps its client informed through [Call.Waiting].
//
// # Honest outcomes
//
// What the log says of a run is what is known of it. An approved run is
// not cancelled when its caller leaves: it runs to its end (an upstream
// call is bounded by its upstream's call_timeout) and its result is kept,
// sealed, for its agent to collect (approval.Options.ResultTTL). A run
// error is recorded for what it says about the action (execute):
// call.failed when the backend answered with an error, or when the call
// never reached it ("not sent"); call.interrupted, outcome unknown, when
// the call was handed over and no answer came (tools.UnknownOutcomeError),
// never call.failed. An interrupted request is terminal; a person records
// what they found out with `countersign calls reconcile`.
//
// # Crashes and restarts
//
// A call's life can outlast the process. Each run is given a call id
// (tools.Call.ID): "request:<auth_req_id>" for a countersigned call,
// "entry:<seq>" for a routine one, seq being its call.allowed entry. A
// countersigned run's record is written with its request's final state,
// in one transaction. [Guard.Resume], at start and before serving, settles
// what the previous process left:
//
//   - A block-mode request still pending is cancelled with reason "server
//     restarted" (recorded, shown on the approver page): its caller died
//     with the process, and it can never be approved afterwards. (One
//     whose call returned authorization_pending at Options.BlockFor is a
//     poll-mode request from then on: wait.go.)
//   - A poll-mode request still pending keeps its expiry; once approved
//     the server runs it once (the tool looked up again by name, its
//     stored arguments prepared again and required to come out as the
//     approved bytes; an upstream tool is waited for up to ToolWait, then
//     the request fails saying so). The agent gets the result from
//     approval_status with the same auth_req_id. A task's request (an MCP
//     task-augmented call, tasks.go) is resumed the same way, and its
//     agent gets the result from tasks/result. An approved request
//     nobody claimed runs the same way: nothing of it had started.
//   - A request whose run was claimed when the process died depends on the
//     backend. The ledger keeps the call id in the transfer row, written in
//     the transfer's transaction (tools.Spec.Recover): if the row is there
//     the request is finished with call.executed and the real result; if
//     not, the transfer never happened and runs now, once (the unique call
//     id makes a second payment impossible). A deploy command or an
//     upstream tool cannot tell whether it acted: the request ends
//     interrupted, recorded as call.interrupted, shown to the approver and
//     returned by approval_status, and it is never run again.
//   - A routine call (no approval) that the log shows allowed but without
//     an outcome is settled from its call.allowed entry, whose agent and
//     arguments the new entry repeats: the ledger says whether the call
//     paid (call.executed with the real result) or not (call.failed: it did
//     not run, and is not run, since its caller is gone and retrying is the
//     caller's to decide); any other tool gets call.interrupted. So every
//     call.allowed has exactly one outcome (a pure read has no
//     call.allowed: it is recorded once, after it ran). The log is read
//     from a mark (store.Marks) that moves while the server runs, without
//     any write or lock on the call path, to a seq before which every
//     routine call has its outcome; so a start reads only the end of the
//     log.
//   - A CIBA backchannel request has no tool to run: pending or approved,
//     it is left to its client, who redeems it; a redemption the crash cut
//     short handed out no token (its record commits with the request's
//     end) and fails.
//
// [Guard.Shutdown] (SIGTERM) refuses new calls, cancels the block-mode
// requests calls wait on with reason "server shutting down", which is what
// their agents are told, keeps poll-mode requests pending, and lets running
// calls finish.
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
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/guard/argschema"
	"github.com/countersign/countersign/guard/routine"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Catalog finds the tool a call names; *tools.Catalog satisfies it.
type Catalog interface {
	Lookup(name string) (*tools.Spec, bool)
	Specs() []*tools.Spec
}

// Policy decides a call's level; *authz.Policy satisfies it.
type Policy interface {
	Decide(in authz.Input) authz.Decision
	// UsesUsage says a tool's rules read the usage variable; its
	// decisions then record the usage they saw, for replay.
	UsesUsage(tool string) bool
	// MayCountersign says some call of a tool can need a human's
	// countersignature; such a tool is offered as a task (tasks.go).
	MayCountersign(tool string, readOnly bool) bool
}

// Recorder appends to the audit log; *audit.Log satisfies it. An append
// that fails stops the action it would have recorded.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// History reads the audit log in order; *audit.Log satisfies it. A start
// reads the end of the log to find routine calls whose outcome a crash
// lost.
type History interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
	LastSeq(ctx context.Context) (int64, error)
}

// Marks keep named positions durably; store.Marks satisfies it.
type Marks interface {
	Mark(ctx context.Context, name string) (value int64, ok bool, err error)
	SetMark(ctx context.Context, name string, value int64) error
}

// Owned tells which log entries a replica appended; auditpg.Owned
// satisfies it.
type Owned interface {
	Owned(ctx context.Context, owner string, after int64) ([]int64, error)
}

// Options wire a Guard.
type Options struct {
	Catalog Catalog
	Policy  Policy
	Audit   Recorder
	// Requests, Runs, Recovery and Tasks are the faces of one approval
	// service (*approval.Service satisfies each), set all or none. Nil:
	// high and critical calls are refused.
	Requests Requests // raise a request, wait for or poll its decision (approve.go)
	Runs     Runs     // claim, finish and read an approved request's one run (parked.go)
	Recovery Recovery // what a restart finds unfinished (resume.go)
	Tasks    Tasks    // an agent's MCP tasks (tasks.go)
	// Grants, when set, lets standing grants carry calls at high
	// (grant.go); nil: every such call waits for a human.
	Grants Grants
	// People, when set, let grants of the identity provider's people apply
	// only while they hold a role the decision names (grant.go).
	People People
	// Evidence and Tokens issue approval tokens (package token): the
	// result of a countersigned call carries one in
	// _meta["countersign/approval"], the tool gets it in tools.Call.Approval
	// (an upstream call sends it on), and a backchannel request is redeemed
	// for one. Tokens nil: no tokens.
	Evidence Evidence
	Tokens   Tokens
	// History and Marks let Resume find the routine calls a crash left
	// without an outcome; without them it does not look.
	History History
	Marks   Marks
	// Owner and Owned, on a database replicas share, let the reaper
	// settle the routine calls a dead replica left (reapRoutine): Owner
	// is this replica's id, which names its own routine-call mark, and
	// Owned tells which entries a replica appended (auditpg.Owned). Nil:
	// one process uses the database.
	Owner string
	Owned Owned
	// Amounts keep what each counted call moved, for RestoreUsage
	// (usage.go); nil: a restart counts only what the log's arguments say.
	Amounts Amounts
	// SharedUsage, when set, keeps the usage windows of tools whose rules
	// read usage in a database replicas share (sharedusage.go); nil: in
	// this process's memory, right while one process uses the database.
	SharedUsage SharedUsage
	// Tools is the tools section of the config, for per-tool settings the
	// guard applies itself (redact_args).
	Tools  map[string]config.Tool
	Logger *slog.Logger
	Now    func() time.Time
	// ToolWait bounds how long a request resumed after a restart waits
	// for its tool to appear (an upstream still connecting); default 1m.
	ToolWait time.Duration
	// MarkEvery is how often the routine-call mark moves; default 30s.
	MarkEvery time.Duration
	// Limits cap each agent's call rate and waiting approval requests,
	// and every call's arguments (limits.go).
	Limits Limits
	// Freezes, when set, is asked first on every call whether its agent
	// is frozen (freeze.go); nil: no agent is.
	Freezes Freezes
	// BlockFor bounds how long a block-mode call waits for a decision;
	// then it returns authorization_pending and its request goes on as a
	// poll-mode one (wait.go). Zero: it waits until decided.
	BlockFor time.Duration
}

// Defaults of Limits.MaxArgBytes and MaxArgDepth.
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
	schemas  map[*tools.Spec]*argschema.Schema

	usage  usageBook
	limits atomic.Pointer[limiter]                // swapped whole by Reconfigure
	tools  atomic.Pointer[map[string]config.Tool] // Options.Tools, swapped whole by Reconfigure
	conds  grantConditions

	bg   sync.WaitGroup  // the dispatcher and the runs it started
	life context.Context // cancelled by Close: parked requests wait for the next start
	stop context.CancelFunc

	parkMu     sync.Mutex
	parked     map[string]*reservation // poll-mode and task requests, and their usage share (parked.go)
	dirty      map[string]struct{}     // parked requests to read again
	allDirty   bool
	parkedDone bool          // the dispatcher stopped: park no more
	kick       chan struct{} // wakes the dispatcher

	// backchannel requests a gone process left, their shares held here
	// until they end (reapusage.go); under parkMu
	watched map[string]struct{}

	routine  routine.Calls // routine calls between call.allowed and outcome
	late     routine.Late  // their outcomes the log could not take yet
	lastMark atomic.Int64  // the routine-call mark as last stored

	mu       sync.Mutex
	closing  bool                // Shutdown began: calls are refused
	waiting  map[string]struct{} // block-mode requests callers wait on
	calls    sync.WaitGroup      // calls inside Handle
	inflight atomic.Int64
}

// New returns a Guard.
func New(opts Options) *Guard {
	g := &Guard{opts: opts, log: opts.Logger, now: opts.Now, schemas: map[*tools.Spec]*argschema.Schema{}, waiting: map[string]struct{}{},
		parked: map[string]*reservation{}, dirty: map[string]struct{}{}, kick: make(chan struct{}, 1)}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.usage.shared, g.usage.log = opts.SharedUsage, g.log
	g.usage.now = g.now
	if g.opts.ToolWait <= 0 {
		g.opts.ToolWait = time.Minute
	}
	if g.opts.MarkEvery <= 0 {
		g.opts.MarkEvery = 30 * time.Second
	}
	g.life, g.stop = context.WithCancel(context.Background())
	g.bg.Add(1)
	go g.markLoop(g.opts.MarkEvery)
	g.late.Calls, g.late.Logger = &g.routine, g.log
	if opts.Audit != nil {
		g.late.Append = opts.Audit.Append
	}
	if opts.History != nil {
		g.late.Since = opts.History.Since
	}
	g.bg.Go(func() { g.late.Run(g.life) })
	g.Reconfigure(opts.Tools, opts.Limits)
	if opts.Runs != nil {
		opts.Runs.OnChange(g.changed)
		g.bg.Add(1)
		go g.dispatch()
	}
	return g
}

// Reconfigure puts a reload's per-tool settings and limits in force for the calls that start from now on.
func (g *Guard) Reconfigure(tools map[string]config.Tool, l Limits) {
	g.tools.Store(&tools)
	if old := g.limits.Swap(newLimiter(l, g.record, g.now)); old != nil {
		old.close()
	}
}

// Close stops waiting for poll-mode approvals and waits for executions
// already under way to finish.
func (g *Guard) Close() {
	g.stop()
	g.bg.Wait()
	g.limits.Load().close()
}

// Call is one tool call as a transport hands it over.
type Call struct {
	Tool  string
	Agent string // authenticated agent; "" is recorded as "unknown"
	// Args are the JSON arguments as the transport decoded them: nil or a
	// JSON object.
	Args any
	// Raw, when the transport kept it, is the arguments' JSON as sent:
	// numbers a float64 cannot hold exactly are refused, not changed.
	Raw json.RawMessage
	// Waiting, when set, keeps the caller informed while its call waits
	// for a human (progress, log messages, elicitation); the function it
	// returns is called when the wait ends.
	Waiting func(ctx context.Context, r *Request) (done func())

	// task, set by HandleTask, hears of the request a countersigned call
	// raised as a task.
	task func(r *approval.Request)
}

// Handle runs one call through the whole path and returns what the agent
// gets. It never returns a protocol error: every refusal is a tool error the
// agent can read, and is in the audit log.
func (g *Guard) Handle(ctx context.Context, c Call) *mcp.CallToolResult {
	if c.Agent == "" {
		c.Agent = "unknown"
	}
	if !g.enter() {
		return g.refuseClosing(ctx, c.Agent, c.Tool)
	}
	defer g.leave()
	if res := g.refuseFrozen(ctx, c.Agent, c.Tool); res != nil {
		return res
	}
	if res := g.admitCall(ctx, c.Agent, c.Tool); res != nil {
		return res
	}
	entry := audit.Entry{Agent: c.Agent, Tool: c.Tool}
	spec, ok := g.opts.Catalog.Lookup(c.Tool)
	if !ok {
		return g.Reject(ctx, c.Agent, c.Tool)
	}
	if spec.Held != nil {
		// A held tool (an upstream's listing changed since it was pinned)
		// is refused before anything else looks at the call.
		if err := spec.Held(ctx); err != nil {
			entry.Kind, entry.Decision, entry.Reason = vocab.KindCallDenied, string(vocab.LevelDeny), err.Error()
			g.record(ctx, entry)
			return toolError("refused: %v", err)
		}
		if spec, ok = g.opts.Catalog.Lookup(c.Tool); !ok || spec.Held != nil {
			return g.Reject(ctx, c.Agent, c.Tool)
		}
	}
	conf := (*g.tools.Load())[c.Tool]
	args, ok := c.Args.(map[string]any)
	if c.Args == nil {
		args, ok = map[string]any{}, true
	}
	if !ok {
		const msg = "invalid arguments: expected a JSON object"
		entry.Kind, entry.Reason = vocab.KindCallRejected, msg
		g.record(ctx, entry)
		return toolError(msg)
	}
	al := g.limits.Load().opts // a reload's limits, for the calls that start from now on
	switch d, n := argschema.Measure(args, al.MaxArgDepth, al.MaxArgBytes); {
	case d > al.MaxArgDepth:
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments nested deeper than %d levels", al.MaxArgDepth),
			"invalid arguments: nested deeper than %d levels", al.MaxArgDepth)
	case n > al.MaxArgBytes:
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments larger than %d bytes", al.MaxArgBytes),
			"invalid arguments: larger than %d bytes", al.MaxArgBytes)
	}
	if err := digest.CheckExact(c.Raw); err != nil {
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("invalid arguments: %v; send fewer digits", err),
			"invalid arguments: %v (it would be approved and acted on as a different value); send fewer digits", err)
	}
	sch, err := g.schema(spec)
	if err == nil {
		err = sch.Validate(args)
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
		if a, aerr := digest.NewArgs(args, 0); aerr == nil {
			setArgs(&entry, a, conf.RedactArgs)
		}
		entry.Kind, entry.Decision, entry.Reason = vocab.KindCallDenied, string(vocab.LevelDeny), "cannot evaluate policy: "+err.Error()
		g.record(ctx, entry)
		return toolError("refused: cannot evaluate policy: %v", err)
	}
	call.Agent = c.Agent
	// The one canonical form of what is decided, approved, run and audited:
	// Prepare's output, with any defaults it applied.
	canon, err := digest.NewArgs(call.Args, al.MaxArgBytes)
	if errors.Is(err, digest.ErrTooLarge) {
		return g.rejectArgs(ctx, entry, args, fmt.Sprintf("arguments larger than %d bytes", al.MaxArgBytes),
			"invalid arguments: larger than %d bytes", al.MaxArgBytes)
	}
	if err != nil {
		return g.rejectArgs(ctx, entry, args, err.Error(), "%v", err)
	}
	setArgs(&entry, canon, conf.RedactArgs)

	// Decide and count under one lock, so that calls made in parallel see
	// each other (a sum split across them is judged as the sum).
	now := g.now()
	keys := keysOf(c.Agent, c.Tool, call.Value)
	usage, d, counted, err := g.decideCounting(ctx, c.Tool, keys, call.Value, now, func(usage map[string]any) authz.Decision {
		return g.opts.Policy.Decide(authz.Input{
			Tool: c.Tool, Agent: c.Agent, Args: call.Args, Facts: call.Facts, Now: now, ReadOnly: spec.ReadOnly(),
			Usage: usage,
		})
	})
	if err != nil {
		g.log.Error("cannot decide a call against the usage windows", "tool", c.Tool, "err", err)
		entry.Kind, entry.Decision, entry.Reason = vocab.KindCallDenied, string(vocab.LevelDeny), "cannot read the usage windows: "+err.Error()
		g.record(ctx, entry)
		return toolError("refused: cannot read the usage windows this call is judged against (%v); try again", err)
	}
	if g.opts.Policy.UsesUsage(c.Tool) {
		entry.Usage, _ = json.Marshal(usage)
	}
	entry.Decision, entry.Rule, entry.Reason = string(d.Level), strings.Join(d.Rules, ","), d.Reason
	entry.PolicySHA256 = d.PolicySHA256 // the policy that decided, though a reload puts another in force before this call ends
	if res := g.keepAmount(ctx, entry, canon, call.Value, counted, now); res != nil {
		return res
	}
	switch d.Level {
	case vocab.LevelLow:
		if spec.Pure {
			// One entry, after the run: call.executed carries the decision.
			res, _, _ := g.run(ctx, spec, call, entry)
			return res
		}
		return g.allowAndRun(ctx, spec, call, entry, counted)
	case vocab.LevelHigh, vocab.LevelCritical:
		if res, ok := g.viaGrant(ctx, spec, call, d, entry, counted); ok {
			return res
		}
		// The approver's key signs every argument, shown whole; a call too
		// large to show is refused before any request exists. It is a
		// call.rejected, like a schema violation: a property of the
		// arguments the agent can fix by sending less, not a decision of
		// policy or of a person; and like one, the log keeps only the
		// arguments' digest and size.
		if err := approval.CheckShown(call.Details, canon.JSON(), c.Tool, c.Agent); err != nil {
			g.usage.release(counted)
			return g.rejectArgs(ctx, entry, args, err.Error(), "refused: %v", err)
		}
		return g.countersign(ctx, c, spec, call, canon, conf, d, entry, counted)
	default:
		entry.Kind = vocab.KindCallDenied
		g.record(ctx, entry)
		return toolError("denied by policy: %s", d.Reason)
	}
}

// allowAndRun records call.allowed, runs the tool once and records its
// outcome: a routine call, or one a standing grant let through.
func (g *Guard) allowAndRun(ctx context.Context, spec *tools.Spec, call *tools.Call, entry audit.Entry, counted *reservation) *mcp.CallToolResult {
	entry.Kind = vocab.KindCallAllowed
	g.routine.Appending()
	allowed, err := g.opts.Audit.Append(context.WithoutCancel(ctx), entry)
	g.routine.Allowed(allowed.Seq, err == nil)
	if err != nil {
		g.log.Error("audit append failed", "kind", entry.Kind, "tool", entry.Tool, "err", err)
		g.usage.release(counted)
		return toolError("refused: the audit log cannot record this call")
	}
	call.ID = entryCallID(allowed.Seq)
	if counted != nil {
		counted.id = call.ID
	}
	// The outcome names the grant too (and not when the call was decided),
	// and finds the arguments in call.allowed: they are stored once.
	entry.DecidedAt = ""
	entry.Args, entry.ArgsSeq = nil, allowed.Seq
	res, outcome, ok := g.run(ctx, spec, call, entry)
	g.routine.End(allowed.Seq, outcome)
	if !ok {
		g.usage.release(counted)
	}
	return res
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
	entry.Kind, entry.Reason = vocab.KindCallRejected, reason
	g.record(ctx, entry)
	return toolError(format, v...)
}

// Reject records and refuses a call to a tool the catalog does not have.
// Transports that look tools up themselves call it for the calls they
// refuse, so that those are in the log too.
func (g *Guard) Reject(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	if agent == "" {
		agent = "unknown"
	}
	g.record(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: agent, Tool: boundName(tool), Reason: "unknown tool"})
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
func (g *Guard) schema(spec *tools.Spec) (*argschema.Schema, error) {
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
	s, err := argschema.Compile(spec.Def.Name, raw)
	if err != nil {
		return nil, err
	}
	if len(g.schemas) > 4096 {
		clear(g.schemas) // replaced specs would otherwise pile up
	}
	g.schemas[spec] = s
	return s, nil
}

// setArgs puts a call's one canonical value in its audit entry: the
// digest always, the arguments unless the tool's are redacted.
func setArgs(e *audit.Entry, a digest.Args, redact bool) {
	e.ArgsSHA256 = a.Hex()
	e.Args, e.ArgsRedact = nil, redact
	if !redact {
		e.Args = a.JSON()
	}
}

func toolError(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, args...))
}

func structured(v any) *mcp.CallToolResult {
	text, _ := json.Marshal(v)
	return mcp.NewToolResultStructured(v, string(text))
}
