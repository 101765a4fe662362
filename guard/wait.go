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

// A block-mode call waits at most Options.BlockFor, under the request
// timeout of common clients (the TypeScript SDK's 60 s, which progress
// resets only if the client opts in), whose cancellation would cancel the
// request. Still pending then, the call returns authorization_pending and
// the request becomes a poll-mode one (detached and parked): one
// mechanism, not a second. Every caller is cut at BlockFor, progress
// token or not: a token does not say the client waits longer.

var errHandedOver = errors.New("not decided within block_for; handed over to approval_status")

// waitBlock returns request r decided, or errHandedOver once it was
// detached and parked (counted then belongs to the dispatcher). A caller
// gone first cancels the request, recorded, as Requests.Wait does.
func (g *Guard) waitBlock(ctx context.Context, r *approval.Request, counted *reservation) (*approval.Request, error) {
	if g.opts.BlockFor <= 0 {
		return g.opts.Requests.Wait(ctx, r.ID)
	}
	bctx, cancel := context.WithTimeoutCause(ctx, g.opts.BlockFor, errHandedOver)
	defer cancel()
	final, err := g.opts.Requests.Await(bctx, r.ID, decided)
	switch {
	case err == nil:
		return final, nil
	case ctx.Err() != nil || !errors.Is(context.Cause(bctx), errHandedOver):
		return g.opts.Requests.Wait(ctx, r.ID) // on a done ctx: cancels unless decided
	}
	g.mu.Lock()
	closing := g.closing
	if !closing {
		delete(g.waiting, r.ID) // a shutdown leaves it pending, as poll mode
	}
	g.mu.Unlock()
	if closing {
		return g.opts.Requests.Wait(ctx, r.ID) // the shutdown cancels it
	}
	bg := context.WithoutCancel(ctx)
	if err := g.opts.Requests.Detach(bg, r.ID); err != nil {
		g.log.Error("cannot hand a pending request over to approval_status; cancelling it", "auth_req_id", r.ID, "err", err)
		if cerr := g.opts.Requests.Cancel(bg, r.ID, "could not be handed over to approval_status: "+err.Error()); cerr != nil && !errors.Is(cerr, approval.ErrNotPending) {
			return nil, fmt.Errorf("cannot hand it over to approval_status (%v) nor cancel it (%v)", err, cerr)
		}
		return g.opts.Requests.Await(bg, r.ID, decided)
	}
	now, err := g.opts.Requests.Await(bg, r.ID, func(*approval.Request) bool { return true })
	if err != nil || now.State != vocab.StatePending {
		return now, err // decided just now: this call runs or reports it
	}
	g.log.Info("approval not decided within block_for; the agent collects it with approval_status",
		"auth_req_id", r.ID, "parked", g.park(r.ID, counted)) // not parked: shutting down, the next start resumes it
	return nil, errHandedOver
}

func decided(r *approval.Request) bool { return r.State != vocab.StatePending }

// handedOverResult is a block-mode call's answer at BlockFor.
func handedOverResult(r *approval.Request, blockFor time.Duration, now time.Time) map[string]any {
	out := pendingResult(r, now)
	out["message"] = fmt.Sprintf("Nobody has approved or denied this yet (waited %s); the request stays pending at approval_url. "+
		"Do not call the tool again: call approval_status with this auth_req_id every interval seconds. "+
		"Once approved, the server runs the call once and approval_status returns its result; "+
		"if it is denied or expires, approval_status says so.", blockFor)
	out["next"] = map[string]any{"tool": "approval_status", "arguments": map[string]any{"auth_req_id": r.ID}}
	return out
}

// pendingAnswer is a pending answer as a call's result. Clients check a
// normal result of a tool with an output schema against it (the
// TypeScript SDK throws on a mismatch), not an error result: there the
// same JSON goes as an error result's text.
func pendingAnswer(spec *tools.Spec, answer map[string]any) *mcp.CallToolResult {
	if spec.Def.RawOutputSchema == nil && spec.Def.OutputSchema.Type == "" {
		return structured(answer)
	}
	text, _ := json.Marshal(answer)
	return mcp.NewToolResultError(string(text))
}
