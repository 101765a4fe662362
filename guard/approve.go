package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/guard/routine"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Requests raises a call's approval request and gets its decision:
// waited on in block mode, polled in poll mode, awaited by a backchannel
// client; a block-mode wait is cancelled at shutdown.
// *approval.Service satisfies it.
type Requests interface {
	Create(ctx context.Context, r approval.NewRequest) (*approval.Request, error)
	Wait(ctx context.Context, id string) (*approval.Request, error)
	Poll(ctx context.Context, id, agent string) (*approval.PollStatus, error)
	Await(ctx context.Context, id string, done func(*approval.Request) bool) (*approval.Request, error)
	Cancel(ctx context.Context, id, reason string) error
	// Detach makes a block-mode request a poll-mode one, when its call
	// stops waiting at Options.BlockFor (wait.go).
	Detach(ctx context.Context, id string) error
}

// countersign raises an approval request and, in block mode, waits for a
// terminal decision, at most Options.BlockFor (wait.go), before running
// the tool once.
func (g *Guard) countersign(ctx context.Context, c Call, spec *tools.Spec, call *tools.Call,
	canon digest.Args, conf config.Tool, d authz.Decision, entry audit.Entry, counted *reservation) *mcp.CallToolResult {
	done := false // the call ran, or may still run: it keeps counting
	defer func() {
		if !done {
			g.usage.release(counted)
		}
	}()
	if g.opts.Requests == nil {
		entry.Kind, entry.Reason = vocab.KindCallDenied, "approval required, but approvals are not available"
		g.record(ctx, entry)
		return toolError("approval required (%s): %s; no approval service is running", d.Level, d.Reason)
	}
	wait := waitMode(d.Wait)
	if c.task != nil {
		wait = approval.WaitTask // the client chose: a task, whatever the policy's wait
	}
	// Raising the request completes even if the caller leaves meanwhile:
	// half a request would sit approvable with nobody waiting. Wait below
	// sees the caller gone and cancels it, on the record.
	r, err := g.createRequest(context.WithoutCancel(ctx), approval.NewRequest{
		Tool: spec.Def.Name, Agent: entry.Agent, Args: canon,
		AuthorizationDetails: call.Details, Summary: call.Summary,
		Level: d.Level, Rule: entry.Rule, PolicySHA256: d.PolicySHA256, Approvers: d.Approvers, Quorum: d.Quorum,
		UserVerification: d.UserVerification, Timeout: d.Timeout, RedactArgs: conf.RedactArgs,
		Wait: wait, Grant: g.grantOffer(entry.Agent, spec.Def.Name, call, d), Batchable: d.Batchable,
	})
	if le := (*limitError)(nil); errors.As(err, &le) {
		return toolError("refused: %v", le)
	}
	if err != nil {
		g.log.Error("cannot raise approval request", "tool", spec.Def.Name, "err", err)
		entry.Kind, entry.Reason = vocab.KindCallDenied, "cannot raise an approval request: "+err.Error()
		g.record(ctx, entry)
		if r != nil { // stored, maybe, and nobody waits for it
			if done = true; counted != nil {
				counted.id = requestCallID(r.ID)
			}
			g.abandon(r.ID, err, counted)
		}
		return toolError("refused: cannot raise an approval request: %v", err)
	}
	entry.RequestID = r.ID
	if counted != nil {
		counted.id = requestCallID(r.ID)
	}
	g.log.Info("approval required", "tool", spec.Def.Name, "agent", entry.Agent,
		"level", d.Level, "auth_req_id", r.ID, "code", r.Code, "url", r.URL)

	if wait != approval.WaitBlock {
		// Poll mode and tasks: the server runs the tool once approved.
		if c.task != nil {
			c.task(r)
		}
		done = true // the dispatcher gives the share back if it never runs
		g.mu.Lock()
		closing := g.closing
		g.mu.Unlock()
		if closing || !g.park(r.ID, counted) {
			// Pending for the next start to resume.
			return pendingAnswer(spec, pendingResult(r, g.now()))
		}
		return pendingAnswer(spec, pendingResult(r, g.now()))
	}

	defer g.waitOn(ctx, r.ID)()
	if c.Waiting != nil {
		defer c.Waiting(ctx, viewOf(r))()
	}
	final, err := g.waitBlock(ctx, r, counted)
	if errors.Is(err, errHandedOver) {
		done = true // parked: the dispatcher gives the share back if it never runs
		return pendingAnswer(spec, handedOverResult(r, g.opts.BlockFor, g.now()))
	}
	if err != nil {
		if ctx.Err() == nil { // the database failed, not the caller: nobody waits for it now
			done = true
			g.abandon(r.ID, err, counted)
		}
		return toolError("approval request %s: %v", r.ID, err)
	}
	if final.State != vocab.StateApproved {
		return toolError("%s", Outcome(final))
	}
	res, ok := g.runApproved(ctx, r.ID, spec, call, entry)
	done = ok
	return res
}

// waitMode is the approval service's name for a policy's wait setting.
func waitMode(w string) string {
	if w == authz.WaitPoll {
		return approval.WaitPoll
	}
	return approval.WaitBlock
}

// runApproved claims the approved request for its one execution, runs it
// and stores the outcome with its audit entry. The run is not cancelled
// when its caller leaves: the humans approved the action, not the agent's
// patience, and an upstream told to cancel may act all the same, leaving
// an outcome nobody knows. It runs to its end (an upstream call is bounded
// by its upstream's call_timeout), and its result is kept, sealed, for the
// agent to collect with approval_status or tasks/result
// (approval.Options.ResultTTL).
func (g *Guard) runApproved(ctx context.Context, id string, spec *tools.Spec, call *tools.Call, entry audit.Entry) (*mcp.CallToolResult, bool) {
	// Claimed even if the caller has just left: an approved request that
	// nobody claims would never run nor end.
	if err := g.opts.Runs.BeginExecution(context.WithoutCancel(ctx), id); err != nil {
		return toolError("refused to run approved request %s: %v", id, err), false
	}
	tok, err := g.issueToken(context.WithoutCancel(ctx), id)
	if err != nil {
		// The tool may hand the action on with its token; without one it
		// does not run at all.
		entry.Kind, entry.Reason = vocab.KindCallFailed, "cannot issue the approval token: "+err.Error()
		if err := g.finishErr(context.WithoutCancel(ctx), id, nil, entry, false); err != nil {
			g.log.Error("cannot store approval outcome", "auth_req_id", id, "err", err)
		}
		return toolError("refused to run approved request %s: cannot issue its approval token: %v", id, err), false
	}
	call.Approval = tok
	call.ID = requestCallID(id)
	res, content, rec, ok := g.execute(context.WithoutCancel(ctx), spec, call, entry)
	if err := g.finishErr(context.WithoutCancel(ctx), id, content, rec, ok); err != nil {
		g.log.Error("cannot store approval outcome", "auth_req_id", id, "err", err)
		// An outcome stored with its entry still in the outbox is durable
		// (it reaches the log when the log can take it); one not stored
		// is not acknowledged: this process stores it once it can
		// (routine.Late), or, should it die first, the next start settles
		// the request from the backend, or as interrupted.
		if !errors.Is(err, approval.ErrRecord) {
			g.late.KeepFinish(id, g.finishLate(id, content, rec, ok))
		}
		if ok && !errors.Is(err, approval.ErrRecord) {
			return withheld(spec), true
		}
	}
	return withToken(res, tok), ok
}

// finishLate stores a run's outcome that could not be stored when the run
// ended; done once stored, or once the request is no longer executing
// (the first attempt was stored after all, or a start settled it).
func (g *Guard) finishLate(id string, content json.RawMessage, rec audit.Entry, ok bool) func(context.Context) error {
	rec.Reason = strings.TrimPrefix(rec.Reason+"; "+routine.NoteLate, "; ")
	return func(ctx context.Context) error {
		err := g.finishErr(ctx, id, content, rec, ok)
		if errors.Is(err, approval.ErrRecord) || errors.Is(err, approval.ErrNotExecuting) {
			return nil
		}
		return err
	}
}

// Outcome says, for the agent, how a request that did not run ended.
func Outcome(r *approval.Request) string {
	switch r.State {
	case vocab.StateDenied:
		return fmt.Sprintf("denied by %s at %s%s (auth_req_id %s)", r.DecidedBy,
			r.DecidedAt.UTC().Format(time.RFC3339), because(r.Reason), r.ID)
	case vocab.StateExpired:
		return fmt.Sprintf("approval request %s expired at %s without a decision",
			r.ID, r.ExpiresAt.UTC().Format(time.RFC3339))
	case vocab.StateCancelled:
		return fmt.Sprintf("approval request %s was cancelled%s", r.ID, because(r.Reason))
	case vocab.StateInterrupted:
		return fmt.Sprintf("approval request %s was approved and its call started, but its outcome is unknown: "+
			"it may have taken effect, and it is never run again (%s)", r.ID, r.Reason)
	}
	return fmt.Sprintf("approval request %s ended in state %s", r.ID, r.State)
}

// resultGone says why a request that ran has no result to hand over: it
// was kept, sealed, for its agent to collect for a while after the run,
// and that while is over (approval.Options.ResultTTL).
func resultGone(r *approval.Request) string {
	if len(r.Result) > 0 || (r.State != vocab.StateExecuted && r.State != vocab.StateFailed) {
		return ""
	}
	if r.ResultUntil.IsZero() {
		return "its result is no longer kept"
	}
	return fmt.Sprintf("its result was kept for collection until %s and has been erased", r.ResultUntil.UTC().Format(time.RFC3339))
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// pendingResult is the CIBA-style answer to a poll-mode call.
func pendingResult(r *approval.Request, now time.Time) map[string]any {
	return map[string]any{
		"status":          "authorization_pending",
		"auth_req_id":     r.ID,
		"expires_in":      int(r.ExpiresAt.Sub(now).Seconds()),
		"interval":        int(r.Interval.Seconds()),
		"binding_message": r.BindingMessage,
		"approval_url":    r.URL,
	}
}

// StatusSpec is the approval_status tool, with which a poll-mode agent
// asks, in CIBA terms, how its request stands. It goes through the guard
// like any tool, so its calls are checked and audited too.
func (g *Guard) StatusSpec() *tools.Spec {
	def := mcp.NewToolWithRawSchema("approval_status",
		"Check an approval request raised by a tool call in poll mode, or by a call that returned "+
			"authorization_pending because nobody decided while it waited. Returns status "+
			"authorization_pending, slow_down (poll less often), expired_token, access_denied, "+
			"or the tool's result once approved and executed.",
		json.RawMessage(`{"type":"object","properties":{"auth_req_id":{"type":"string","format":"uuid",`+
			`"description":"The auth_req_id the tool call returned."}},"required":["auth_req_id"],"additionalProperties":false}`))
	def.Annotations = mcp.ToolAnnotation{
		Title: "Approval status", ReadOnlyHint: mcp.ToBoolPtr(true), DestructiveHint: mcp.ToBoolPtr(false),
		IdempotentHint: mcp.ToBoolPtr(false), OpenWorldHint: mcp.ToBoolPtr(false),
	}
	return &tools.Spec{
		Def:  def,
		Pure: true,
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			return &tools.Call{Args: args, Summary: "Check an approval request"}, nil
		},
		Run: func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
			if g.opts.Requests == nil {
				return nil, fmt.Errorf("no approval service is running")
			}
			id, _ := call.Args["auth_req_id"].(string)
			ps, err := g.opts.Requests.Poll(ctx, id, call.Agent)
			if err != nil {
				return nil, err
			}
			out := map[string]any{"auth_req_id": id, "status": ps.Status}
			if r := ps.Request; r != nil {
				out["interval"] = int(r.Interval.Seconds())
				out["state"] = r.State
				if len(r.Result) > 0 {
					out["result"] = r.Result
				} else if gone := resultGone(r); gone != "" {
					out["result_erased"] = gone
				}
				switch r.State {
				case vocab.StateDenied, vocab.StateExpired, vocab.StateCancelled, vocab.StateInterrupted:
					out["error_description"] = Outcome(r)
				}
			}
			record := map[string]any{"auth_req_id": id, "status": ps.Status}
			if r := ps.Request; r != nil && (r.State == vocab.StateExecuted || r.State == vocab.StateFailed) {
				// The call ran on the humans' approval: the agent gets its
				// approval token as a blocking call's result carries it.
				tok, err := g.issueToken(ctx, id)
				if err != nil {
					return nil, fmt.Errorf("cannot issue the approval token of %s: %w", id, err)
				}
				return &tools.Result{MCP: withToken(structured(out), tok), Record: record}, nil
			}
			return &tools.Result{Content: out, Record: record}, nil
		},
	}
}
