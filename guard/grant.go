package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Grants are standing grants: an approver's permission, given with a tap,
// for further calls matching a condition to run without a new one;
// *approval.Service satisfies it.
type Grants interface {
	ActiveGrants(ctx context.Context, agent, tool string) ([]*grant.Grant, error)
	UseGrant(ctx context.Context, id string) (*grant.Use, error)
}

// People say whether a grant's approver, a person of the identity
// provider, holds a role:NAME among a decision's approvers now (false
// while the provider cannot be asked); *identity.People satisfies it.
type People interface {
	MayApprove(ctx context.Context, approver string, approvers []string) bool
}

// grantOffer is the grant the approver of a call's request is offered, if
// the policy allows grants on the tool: its condition derived from the
// call (authz.ProposeGrant) and the policy's caps. nil when none.
func (g *Guard) grantOffer(agent, tool string, call *tools.Call, d authz.Decision) *grant.Offer {
	if g.opts.Grants == nil || d.Grant == nil || d.Level != vocab.LevelHigh || d.Quorum != 1 {
		return nil
	}
	cond, err := authz.ProposeGrant(d.Grant, agent, tool, call.Args)
	if err != nil {
		g.log.Info("no grant offered with this request", "tool", tool, "agent", agent, "why", err)
		return nil
	}
	return &grant.Offer{Condition: cond, MaxDuration: d.Grant.MaxDuration, MaxCalls: d.Grant.MaxCalls}
}

// viaGrant lets a call the policy puts at high run without a new tap when
// a grant in force covers it: the policy still allows grants on the tool,
// the grant's approver may still approve this call, and the call satisfies
// the grant's condition. One use of the grant is taken atomically; the
// call.allowed entry and its outcome name the grant and the approval that
// created it. A call at critical or deny never gets here. Anything that
// goes wrong means no grant applies: the call waits for a human.
func (g *Guard) viaGrant(ctx context.Context, spec *tools.Spec, call *tools.Call, d authz.Decision, entry audit.Entry, counted *reservation) (*mcp.CallToolResult, bool) {
	if g.opts.Grants == nil || d.Level != vocab.LevelHigh || d.Grant == nil {
		return nil, false
	}
	grants, err := g.opts.Grants.ActiveGrants(ctx, entry.Agent, entry.Tool)
	if err != nil {
		g.log.Error("cannot read standing grants; the call waits for a human", "tool", entry.Tool, "err", err)
		return nil, false
	}
	for _, gr := range grants {
		if !slices.Contains(d.Approvers, gr.Approver) && (g.opts.People == nil || !g.opts.People.MayApprove(ctx, gr.Approver, d.Approvers)) {
			continue
		}
		cond, err := g.condition(gr)
		if err != nil {
			g.log.Error("a grant's condition does not compile; it lets nothing through", "grant", gr.ID, "err", err)
			continue
		}
		if ok, err := cond.Match(entry.Agent, entry.Tool, call.Args); err != nil || !ok {
			continue
		}
		if !g.sameDefinition(ctx, gr, call) {
			continue
		}
		use, err := g.opts.Grants.UseGrant(ctx, gr.ID)
		if errors.Is(err, grant.ErrGrantSpent) {
			continue // used up, expired or revoked meanwhile
		}
		if err != nil {
			g.log.Error("cannot take a use of a grant; the call waits for a human", "grant", gr.ID, "err", err)
			return nil, false
		}
		entry.GrantID, entry.GrantSeq = use.ID, use.Seq
		entry.DecidedAt = use.DecidedAt.UTC().Format(audit.TimeFormat)
		entry.Reason = fmt.Sprintf("%s; let through by grant %s of %s (call %d of %d)", d.Reason, use.ID, use.Approver, use.Use, use.MaxCalls)
		g.log.Info("call let through by a standing grant", "tool", entry.Tool, "agent", entry.Agent, "grant", use.ID,
			"use", use.Use, "max_calls", use.MaxCalls)
		return g.allowAndRun(ctx, spec, call, entry, counted), true
	}
	return nil, false
}

// sameDefinition reports whether the call's tool is defined as it was when
// the grant was given: an upstream tool's calls carry the hash of its
// pinned definition (definition_sha256) in their authorization details,
// and a grant given under one definition lets no call of another through.
// The grant's request is read only for such tools.
func (g *Guard) sameDefinition(ctx context.Context, gr *grant.Grant, call *tools.Call) bool {
	def := definitionOf(call.Details)
	if def == "" {
		return true
	}
	if g.opts.Runs == nil {
		return false
	}
	r, err := g.opts.Runs.Stored(ctx, gr.RequestID)
	return err == nil && definitionOf(r.AuthorizationDetails) == def
}

// definitionOf returns the definition_sha256 of the first authorization
// detail that carries one, or "".
func definitionOf(details json.RawMessage) string {
	var ds []struct {
		Definition string `json:"definition_sha256"`
	}
	if json.Unmarshal(details, &ds) != nil {
		return ""
	}
	for _, d := range ds {
		if d.Definition != "" {
			return d.Definition
		}
	}
	return ""
}

// grantConditions caches compiled grant conditions by grant id (a grant's
// condition never changes).
type grantConditions struct {
	mu sync.Mutex
	m  map[string]*authz.Condition
}

func (g *Guard) condition(gr *grant.Grant) (*authz.Condition, error) {
	c := &g.conds
	c.mu.Lock()
	defer c.mu.Unlock()
	if cond, ok := c.m[gr.ID]; ok {
		return cond, nil
	}
	cond, err := authz.CompileCondition(gr.Condition)
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) > 4096 {
		c.m = map[string]*authz.Condition{} // ended grants would pile up
	}
	c.m[gr.ID] = cond
	return cond, nil
}
