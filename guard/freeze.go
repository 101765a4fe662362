package guard

import (
	"context"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/mark3labs/mcp-go/mcp"
)

// Freezes says whether an agent is frozen (`countersign agents freeze`,
// or the approver page's Freeze button); *approval.Service satisfies it.
// It is asked on every call, so it reads what is stored, whichever
// process froze the agent.
type Freezes interface {
	Frozen(ctx context.Context, agent string) (*approval.Freeze, error)
}

// refuseFrozen refuses every call of a frozen agent before anything else
// is done. The refusals are recorded as call.denied, one entry per agent
// a minute at most (with their count), as the limits' refusals are: a
// frozen agent that keeps calling grows the log by a bounded amount. When
// the freeze cannot be read the call is refused too.
func (g *Guard) refuseFrozen(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	if g.opts.Freezes == nil {
		return nil
	}
	f, err := g.opts.Freezes.Frozen(ctx, agent)
	if err != nil {
		g.log.Error("cannot tell whether the agent is frozen; its call is refused", "agent", agent, "tool", boundName(tool), "err", err)
		g.limits.refusedAs(ctx, audit.KindCallDenied, agent, tool, "cannot tell whether the agent is frozen")
		return toolError("refused: cannot tell whether agent %s is frozen; try again", agent)
	}
	if f == nil {
		return nil
	}
	why := (&approval.FrozenError{Freeze: *f}).Error()
	g.limits.refusedAs(ctx, audit.KindCallDenied, agent, tool, why)
	return toolError("refused: %s", why)
}
