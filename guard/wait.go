package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// A block-mode call holds its connection open while a person reaches for
// their key, but not past what its client waits for a response: the
// official TypeScript SDK gives up on a request after 60 s (progress
// notifications do not reset that unless the client opts in with
// resetTimeoutOnProgress) and cancels it, and a cancelled call's request
// is cancelled with it. So the wait is bounded by Options.BlockFor. When
// nobody has decided by then the call returns authorization_pending, a
// normal result, and the request goes on exactly as a poll-mode one: it
// is detached (stored as poll mode, so a restart resumes it instead of
// cancelling it) and parked, the server runs it once when approved, and
// the agent collects the result with approval_status. One mechanism, not
// a second one.
//
// Every caller is cut at BlockFor, whether it sends progress tokens or
// not: a progress token does not say the client will wait longer (the
// TypeScript SDK sends one whenever the caller wants progress, and still
// times out at 60 s). A decision within BlockFor reaches the call as it
// always did. An operator whose clients all wait longer raises block_for,
// or sets 0 to wait until the request is decided or expires.

// errHandedOver says a block-mode wait ended at BlockFor with the request
// still pending, parked for the dispatcher.
var errHandedOver = errors.New("not decided within block_for; handed over to approval_status")

// waitBlock waits for request r's decision, at most BlockFor. It returns
// the decided request, or errHandedOver once r was detached and parked
// (counted then belongs to the dispatcher), or the error of a wait that
// failed; a caller that went away cancels the request, on the record, as
// Requests.Wait does.
func (g *Guard) waitBlock(ctx context.Context, r *approval.Request, counted *reservation) (*approval.Request, error) {
	if g.opts.BlockFor <= 0 {
		return g.opts.Requests.Wait(ctx, r.ID)
	}
	bctx, cancel := context.WithTimeoutCause(ctx, g.opts.BlockFor, errHandedOver)
	defer cancel()
	final, err := g.opts.Requests.Await(bctx, r.ID, decided)
	if err == nil {
		return final, nil
	}
	if ctx.Err() != nil || !errors.Is(context.Cause(bctx), errHandedOver) {
		// The caller left (Wait, on a done context, cancels the request
		// unless it was decided) or the wait failed: as without BlockFor.
		return g.opts.Requests.Wait(ctx, r.ID)
	}
	return g.handOver(ctx, r, counted)
}

func decided(r *approval.Request) bool { return r.State != vocab.StatePending }

// handOver makes request r, still pending at BlockFor, a poll-mode one
// and parks it. A request decided meanwhile is returned, to be run or
// reported by the call as usual.
func (g *Guard) handOver(ctx context.Context, r *approval.Request, counted *reservation) (*approval.Request, error) {
	g.mu.Lock()
	closing := g.closing
	if !closing {
		// Off the list a shutdown cancels: it is left pending, as poll-mode
		// requests are.
		delete(g.waiting, r.ID)
	}
	g.mu.Unlock()
	if closing {
		// The shutdown cancels every request a call waits on, this one
		// too; the call reports that as before.
		return g.opts.Requests.Wait(ctx, r.ID)
	}
	if err := g.opts.Requests.Detach(context.WithoutCancel(ctx), r.ID); err != nil {
		// Still block mode, and nobody will wait on it: end it, recorded.
		g.log.Error("cannot hand a pending request over to approval_status; cancelling it", "auth_req_id", r.ID, "err", err)
		cerr := g.opts.Requests.Cancel(context.WithoutCancel(ctx), r.ID, "could not be handed over to approval_status: "+err.Error())
		if cerr != nil && !errors.Is(cerr, approval.ErrNotPending) {
			return nil, fmt.Errorf("cannot hand it over to approval_status (%v) nor cancel it (%v)", err, cerr)
		}
		return g.opts.Requests.Await(context.WithoutCancel(ctx), r.ID, decided)
	}
	now, err := g.opts.Requests.Await(context.WithoutCancel(ctx), r.ID, func(*approval.Request) bool { return true })
	if err != nil {
		return nil, err
	}
	if now.State != vocab.StatePending {
		// Decided just now: this call still holds its caller, and runs it
		// (a poll-mode request nobody parked is this call's alone).
		return now, nil
	}
	if !g.park(r.ID, counted) {
		// Shutting down: pending, in poll mode, for the next start.
		g.log.Info("approval not decided within block_for; left pending for the next start", "auth_req_id", r.ID)
	} else {
		g.log.Info("approval not decided within block_for; the agent collects it with approval_status",
			"auth_req_id", r.ID, "block_for", g.opts.BlockFor)
	}
	return nil, errHandedOver
}

// handedOverResult is what a block-mode call returns at BlockFor: the
// poll-mode answer, and how to go on.
func handedOverResult(r *approval.Request, blockFor time.Duration, now time.Time) map[string]any {
	out := pendingResult(r, now)
	out["message"] = fmt.Sprintf("Nobody has approved or denied this yet (waited %s); the request stays pending at approval_url. "+
		"Do not call the tool again: call approval_status with this auth_req_id every interval seconds. "+
		"Once approved, the server runs the call once and approval_status returns its result; "+
		"if it is denied or expires, approval_status says so.", blockFor)
	out["next"] = map[string]any{"tool": "approval_status", "arguments": map[string]any{"auth_req_id": r.ID}}
	return out
}

// pendingAnswer is a pending request's answer as its call's result: a
// normal result, except for a tool that declares an output schema. Such a
// tool's structured content must match its schema, and clients check it
// (the TypeScript SDK's callTool throws on a mismatch, and on a result
// without structured content); only an error result's content is left
// unchecked. So there the same JSON goes as an error result's text.
func pendingAnswer(spec *tools.Spec, answer map[string]any) *mcp.CallToolResult {
	if spec.Def.RawOutputSchema == nil && spec.Def.OutputSchema.Type == "" {
		return structured(answer)
	}
	text, _ := json.Marshal(answer)
	return mcp.NewToolResultError(string(text))
}
