package guard

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Freezes says whether an agent is frozen (`countersign agents freeze`,
// or the approver page's Freeze button); *approval.Service satisfies it.
// It is asked on every call, so it reads what is stored, whichever
// process froze the agent.
type Freezes interface {
	Frozen(ctx context.Context, agent string) (*freeze.Freeze, error)
}

// refuseFrozen refuses every call of a frozen agent before anything else
// is done (see frozen).
func (g *Guard) refuseFrozen(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	if err := g.frozen(ctx, agent, tool); err != nil {
		return toolError("refused: %v", err)
	}
	return nil
}

// frozen returns a *freeze.FrozenError when agent is frozen, or an
// error when that cannot be told (fail closed). Such refusals are
// recorded as call.denied, one entry per agent a minute at most (with
// their count), as the limits' refusals are: a frozen agent that keeps
// calling grows the log by a bounded amount.
func (g *Guard) frozen(ctx context.Context, agent, tool string) error {
	if g.opts.Freezes == nil {
		return nil
	}
	f, err := g.opts.Freezes.Frozen(ctx, agent)
	if err != nil {
		g.log.Error("cannot tell whether the agent is frozen; its call is refused", "agent", agent, "tool", boundName(tool), "err", err)
		g.limits.Load().refusedAs(ctx, vocab.KindCallDenied, agent, tool, "cannot tell whether the agent is frozen")
		return fmt.Errorf("cannot tell whether agent %s is frozen; try again", agent)
	}
	if f == nil {
		return nil
	}
	fe := &freeze.FrozenError{Freeze: *f}
	g.limits.Load().refusedAs(ctx, vocab.KindCallDenied, agent, tool, fe.Error())
	return fe
}
