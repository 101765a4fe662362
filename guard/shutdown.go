package guard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// enter admits a call unless the guard is shutting down; every admitted
// call calls leave when it returns.
func (g *Guard) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.calls.Add(1)
	g.inflight.Add(1)
	return true
}

func (g *Guard) leave() {
	g.inflight.Add(-1)
	g.calls.Done()
}

// refuseClosing records and refuses a call that arrives during shutdown.
func (g *Guard) refuseClosing(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	g.record(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: agent, Tool: boundName(tool), Reason: "server shutting down"})
	return toolError("refused: the server is shutting down; call again once it is back")
}

// waitOn registers a block-mode request its caller now waits for, so that
// a shutdown can end the wait with a reason. A request raised while the
// shutdown has already begun is cancelled at once.
func (g *Guard) waitOn(ctx context.Context, id string) (done func()) {
	g.mu.Lock()
	closing := g.closing
	if !closing {
		g.waiting[id] = struct{}{}
	}
	g.mu.Unlock()
	if closing {
		g.cancelWait(ctx, id)
		return func() {}
	}
	return func() {
		g.mu.Lock()
		delete(g.waiting, id)
		g.mu.Unlock()
	}
}

func (g *Guard) cancelWait(ctx context.Context, id string) {
	err := g.opts.Requests.Cancel(context.WithoutCancel(ctx), id, approval.ReasonShuttingDown)
	if err != nil && !errors.Is(err, approval.ErrNotPending) {
		g.log.Error("cannot cancel a waiting request at shutdown", "auth_req_id", id, "err", err)
	}
}

// Shutdown stops the guard taking calls and lets the calls under way end,
// until ctx does:
//
//   - a call that arrives now is refused (and recorded as such);
//   - block-mode requests that calls wait on are cancelled with reason
//     approval.ReasonShuttingDown, which is what their agents are told;
//   - poll-mode requests are left pending, with their expiry, for the
//     next start to resume;
//   - calls that are running finish.
//
// It returns an error naming how many calls are still running when ctx
// ends first; those the next start settles.
func (g *Guard) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	waiting := slices.Collect(maps.Keys(g.waiting))
	g.mu.Unlock()
	for _, id := range waiting {
		g.cancelWait(ctx, id)
	}
	g.stop() // poll-mode watchers stop; their requests stay pending
	done := make(chan struct{})
	go func() {
		g.calls.Wait()
		g.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		g.advanceMark(context.WithoutCancel(ctx))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("guard: %d calls still running at the end of the shutdown timeout", g.inflight.Load())
	}
}
