package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// Backchannel is a request for a countersignature that arrives outside MCP:
// a CIBA backchannel authentication request (package ciba). It takes the
// path of a countersigned tool call (canonical arguments, policy, approval
// request, audit) up to the humans' decision. No tool runs afterwards: what
// happens once, when the request is approved, is the issuing of its
// approval token ([Guard.Redeem]).
type Backchannel struct {
	// Tool is the policy entry the request is decided under ("ciba").
	// It is not in the catalog and is never an MCP tool.
	Tool  string
	Agent string
	// Args are the request's parameters as policy rules see them (args.*)
	// and as the approvers approve them, through their digest.
	Args map[string]any
	// Details is the validated RFC 9396 authorization_details array the
	// approver page renders.
	Details json.RawMessage
	// Summary heads the approver page and the pending list.
	Summary string
	// Timeout, when positive and shorter than the policy's, is the
	// request's lifetime (CIBA requested_expiry).
	Timeout time.Duration
	// Approvers narrows the approvers policy allows for this request to
	// those the caller names (CIBA login_hint). An error refuses the
	// request and is recorded as its reason; Raise returns it as is.
	Approvers func(allowed []string, quorum int) ([]string, error)
	// Actions are the details that describe what a tool does, each
	// prepared by that tool ([Guard.PrepareAction]). Each is decided by
	// its tool's policy, with the facts the tool gathered, and the request
	// gets the strictest of those decisions and Tool's (see [authz.Combine]).
	Actions []Action
}

// Action is one authorization detail judged as a call of a tool.
type Action struct {
	Tool string
	Call *tools.Call
}

// ErrNoTool says no tool of the catalog can judge an action: the detail
// is judged by the backchannel's own policy alone.
var ErrNoTool = errors.New("no such tool")

// Offers reports whether the catalog has tool: whether an action for it
// can be prepared.
func (g *Guard) Offers(tool string) bool {
	_, ok := g.opts.Catalog.Lookup(tool)
	return ok
}

// PrepareAction checks args against tool's schema and runs the tool's own
// Prepare: its argument checks and the facts it gathers (the ledger's
// counterparty, the secrets directory's classification), with no side
// effect. A tool not in the catalog is ErrNoTool; arguments the tool
// refuses are a *tools.ArgError or a schema error, which say why.
func (g *Guard) PrepareAction(ctx context.Context, tool string, args map[string]any) (*tools.Call, error) {
	spec, ok := g.opts.Catalog.Lookup(tool)
	if !ok {
		return nil, ErrNoTool
	}
	sch, err := g.schema(spec)
	if err == nil {
		err = sch.Validate(args)
	}
	if err != nil {
		return nil, &tools.ArgError{Field: tool, Msg: err.Error()}
	}
	return spec.Prepare(ctx, args)
}

// Refusal is a backchannel request that policy refused. Reason is what
// the audit log records.
type Refusal struct{ Reason string }

func (e *Refusal) Error() string { return "refused: " + e.Reason }

// Raise runs a backchannel request through policy and raises its approval
// request; it returns once the request is pending, and every outcome is in
// the audit log. Policy decides it as it decides a tool call. Level low is
// refused too: a countersignature nobody has to give proves nothing.
func (g *Guard) Raise(ctx context.Context, b Backchannel) (*approval.Request, error) {
	if b.Agent == "" {
		b.Agent = "unknown"
	}
	if err := g.frozen(ctx, b.Agent, b.Tool); err != nil {
		return nil, err // a *freeze.FrozenError, tallied as call.denied
	}
	entry := audit.Entry{Agent: b.Agent, Tool: boundName(b.Tool)}
	conf := (*g.tools.Load())[b.Tool]
	canon, err := digest.NewArgs(b.Args, 0)
	if err != nil {
		entry.Kind, entry.Reason = vocab.KindCallRejected, err.Error()
		g.record(ctx, entry)
		return nil, err
	}
	setArgs(&entry, canon, conf.RedactArgs)
	now := g.now()
	d := g.opts.Policy.Decide(authz.Input{Tool: b.Tool, Agent: b.Agent, Args: b.Args, Now: now})
	// Each action is decided as its tool's call, and counts where that
	// call would: a payment approved here is judged with, and adds to, the
	// agent's transfers in the usage windows.
	var counted []*reservation
	if g.opts.SharedUsage != nil {
		d, counted = g.decideActionsShared(ctx, b, d, now)
	} else {
		g.usage.mu.Lock()
		for _, a := range b.Actions {
			keys := keysOf(b.Agent, a.Tool, a.Call.Value)
			ad := g.opts.Policy.Decide(authz.Input{
				Tool: a.Tool, Agent: b.Agent, Args: a.Call.Args, Facts: a.Call.Facts, Now: now,
				Usage: g.usage.facts(keys, now),
			})
			counted = append(counted, g.usage.add(keys, a.Call.Value, now))
			d = authz.Combine(d, a.Tool, ad)
		}
		g.usage.mu.Unlock()
	}
	keep := false
	defer func() {
		if !keep {
			for _, r := range counted {
				g.usage.release(r)
			}
		}
	}()
	entry.Decision, entry.Rule, entry.Reason = string(d.Level), strings.Join(d.Rules, ","), d.Reason
	entry.PolicySHA256 = d.PolicySHA256 // as Handle: the policy that decided
	refuse := func(reason string) (*approval.Request, error) {
		entry.Kind, entry.Reason = vocab.KindCallDenied, reason
		if !g.record(ctx, entry) {
			return nil, errors.New("the audit log cannot record this request")
		}
		return nil, &Refusal{Reason: reason}
	}
	switch d.Level {
	case vocab.LevelHigh, vocab.LevelCritical:
	case vocab.LevelLow:
		return refuse(fmt.Sprintf("policy level low for %s: nothing for a human to countersign (%s)", b.Tool, d.Reason))
	default:
		return refuse(d.Reason)
	}
	if g.opts.Requests == nil {
		return refuse("approval required, but approvals are not available")
	}
	approvers := d.Approvers
	if b.Approvers != nil {
		if approvers, err = b.Approvers(d.Approvers, d.Quorum); err != nil {
			entry.Kind, entry.Reason = vocab.KindCallDenied, err.Error()
			if !g.record(ctx, entry) {
				return nil, errors.New("the audit log cannot record this request")
			}
			return nil, err
		}
	}
	// What each action moves is kept before approval.requested counts
	// it, as a tool call's is (keepAmount): a restart rebuilds the windows
	// from these rows, whatever redact_args keeps out of the log.
	if err := g.keepActions(ctx, canon, b.Actions, now); err != nil {
		g.log.Error("cannot keep the amounts of a backchannel request for the usage windows", "tool", b.Tool, "err", err)
		entry.Decision, entry.Rule = string(vocab.LevelDeny), ""
		return refuse("cannot keep the amounts this request moves for the usage windows: " + err.Error())
	}
	timeout := d.Timeout
	if b.Timeout > 0 && b.Timeout < timeout {
		timeout = b.Timeout
	}
	r, err := g.createRequest(ctx, approval.NewRequest{
		Tool: b.Tool, Agent: b.Agent, Args: canon,
		AuthorizationDetails: b.Details, Summary: b.Summary,
		Level: d.Level, Rule: entry.Rule, PolicySHA256: d.PolicySHA256, Approvers: approvers, Quorum: d.Quorum,
		UserVerification: d.UserVerification, Timeout: timeout, RedactArgs: conf.RedactArgs,
		Wait: approval.WaitBackchannel,
	})
	// Over a pending cap: refused, and tallied into call.rate_limited
	// rather than a call.denied each, so a flood stays a bounded record.
	if le := (*limitError)(nil); errors.As(err, &le) {
		return nil, &Refusal{Reason: le.Error()}
	}
	if r != nil {
		for i, c := range counted {
			if c != nil && c.shared {
				// A replica that finds this one dead rebuilds the same
				// share under the same id (shares.ofActions): given back once.
				c.id = actionCallID(r.ID, i)
			}
		}
	}
	if err != nil {
		g.log.Error("cannot raise approval request", "tool", b.Tool, "err", err)
		entry.Kind, entry.Reason = vocab.KindCallDenied, "cannot raise an approval request: "+err.Error()
		g.record(ctx, entry)
		if keep = r != nil; keep { // stored, maybe, and its client never learns of it
			g.abandon(r.ID, err, counted...)
		}
		return nil, fmt.Errorf("cannot raise an approval request: %w", err)
	}
	g.log.Info("approval required", "tool", b.Tool, "agent", b.Agent,
		"level", d.Level, "auth_req_id", r.ID, "code", r.Code, "url", r.URL)
	if len(counted) > 0 {
		keep = true
		go g.countWhileLive(r.ID, counted)
	}
	return r, nil
}

// countWhileLive keeps a backchannel request's actions in the usage
// windows until it ends without an approval token (denied, expired,
// cancelled, failed); an approved request counts from then on, as an
// executed call does. A goroutine per request is bounded by the pending
// caps (limits.go) and by the humans who approve.
func (g *Guard) countWhileLive(id string, counted []*reservation) {
	r, err := g.opts.Requests.Await(g.life, id, approval.Settled)
	if err != nil || r.State == vocab.StateExecuted {
		return // closing, or the token was issued: it keeps counting
	}
	for _, c := range counted {
		g.usage.release(c)
	}
}

// RecordRejected records a backchannel request refused before it reached
// policy: malformed, or naming nobody who could approve it.
func (g *Guard) RecordRejected(ctx context.Context, agent, tool, reason string) {
	if agent == "" {
		agent = "unknown"
	}
	const max = 500
	if len(reason) > max {
		reason = reason[:max] + "…"
	}
	g.record(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: agent, Tool: boundName(tool), Reason: reason})
}

// Redeem answers a poll for a backchannel request raised by agent under
// tool. While the request waits the status is CIBA's
// (authorization_pending, slow_down, expired_token, access_denied). The
// first Redeem after the approval claims the request, records
// call.executed and returns status approved with the approval token; the
// request is then executed, and every later Redeem says so without a token.
// An approval redeemed after the request's expires_at is expired (and
// recorded as call.failed): the auth_req_id lives until then, approved or
// not. A request of another agent or another tool is approval.ErrNotFound.
func (g *Guard) Redeem(ctx context.Context, tool, id, agent string) (*approval.PollStatus, string, error) {
	if g.opts.Requests == nil || g.opts.Runs == nil || g.opts.Tokens == nil || g.opts.Evidence == nil {
		return nil, "", errors.New("approvals or approval tokens are not available")
	}
	ps, err := g.opts.Requests.Poll(ctx, id, agent)
	if err != nil {
		return nil, "", err
	}
	r := ps.Request
	if r == nil || r.Tool != tool {
		return nil, "", approval.ErrNotFound
	}
	if ps.Status != approval.PollApproved {
		return ps, "", nil
	}
	if err := g.opts.Runs.BeginExecution(ctx, id); err != nil {
		if errors.Is(err, approval.ErrNotApproved) {
			// Another poll redeemed it first.
			return &approval.PollStatus{Status: approval.PollExecuted, Request: r}, "", nil
		}
		return nil, "", err
	}
	ctx = context.WithoutCancel(ctx) // claimed: see it through
	entry := audit.Entry{Agent: r.Agent, Tool: r.Tool, RequestID: r.ID, Decision: string(r.Level)}
	fail := func(reason string) (*approval.PollStatus, string, error) {
		entry.Kind, entry.Reason = vocab.KindCallFailed, reason
		if err := g.opts.Runs.Finish(ctx, id, approval.Outcome{State: vocab.StateFailed, Record: entry}); err != nil {
			g.log.Error("cannot store approval outcome", "auth_req_id", id, "err", err)
		}
		return nil, "", errors.New(reason)
	}
	// The record names the rules that decided, as a tool call's does, so
	// that replay can hold it to the policy.
	stored, err := g.opts.Runs.Stored(ctx, id)
	if err != nil {
		return fail("cannot read the request: " + err.Error())
	}
	entry.Rule, entry.PolicySHA256 = stored.Rule, stored.PolicySHA256 // the policy that raised it, not one a reload put in force since
	ev, err := g.opts.Evidence.Evidence(ctx, id)
	if err != nil {
		return fail("cannot read the approval: " + err.Error())
	}
	if !g.now().Before(r.ExpiresAt) {
		// Approved in time, but the auth_req_id lives only until
		// expires_at (CIBA): an exchange after that gets expired_token.
		fail(fmt.Sprintf("auth_req_id expired at %s before it was exchanged for the approval token", r.ExpiresAt.UTC().Format(time.RFC3339)))
		return &approval.PollStatus{Status: approval.PollExpired, Request: r}, "", nil
	}
	tok, err := g.tokenFor(ev)
	if err != nil {
		return fail("cannot issue the approval token: " + err.Error())
	}
	entry.ArgsSHA256 = hex.EncodeToString(ev.ArgsSHA256[:])
	sum := sha256.Sum256([]byte(tok))
	result, _ := json.Marshal(map[string]string{"approval_token_sha256": hex.EncodeToString(sum[:])})
	entry.Kind, entry.Result = vocab.KindCallExecuted, result
	// The token goes out only once the log says it was issued. The record
	// is written with the request's state, so a crash cannot leave one
	// without the other (guard.Resume settles a claim it interrupted).
	if err := g.opts.Runs.Finish(ctx, id, approval.Outcome{State: vocab.StateExecuted, Result: result, Record: entry}); err != nil {
		g.log.Error("cannot record the approval token", "auth_req_id", id, "err", err)
		return nil, "", errors.New("the audit log cannot record the approval token")
	}
	return ps, tok, nil
}

// keepActions stores what each action of a backchannel request moves
// (nothing, for most), one row per action under its tool and
// actionSHA256: the request's entries name only its own arguments.
func (g *Guard) keepActions(ctx context.Context, canon digest.Args, actions []Action, at time.Time) error {
	if g.opts.Amounts == nil {
		return nil
	}
	request := canon.Hex()
	for i, a := range actions {
		if err := g.keepValue(ctx, a.Tool, actionSHA256(request, i), a.Call.Value, at); err != nil {
			return err
		}
	}
	return nil
}

// actionSHA256 is the args_sha256 of the amounts row of the i-th action
// of a backchannel request whose arguments' SHA-256 is request (hex). It
// cannot be the digest of any call's canonical arguments (its preimage is
// not JSON), so a tool call's row and an action's never meet.
func actionSHA256(request string, i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "backchannel action %d of %s", i, request))
	return hex.EncodeToString(sum[:])
}

// RestoreBackchannel counts again, after a restart, what the backchannel
// requests of the last day (entries of tool, oldest first, as for
// RestoreUsage) moved in their actions' usage windows: RestoreUsage
// counts an entry under the tool it names, and a CIBA payment counts as a
// transfer. Each request's actions come from the rows kept when it was
// raised (keepActions), so a request whose arguments were redacted counts
// too; for a request raised before those were kept, actions maps its
// logged arguments to its actions, as when it was raised (one whose
// arguments were redacted then is not restored). A request that ended
// without its token stops counting; one still live counts until it does.
func (g *Guard) RestoreBackchannel(ctx context.Context, tool string, entries []audit.Entry,
	actions func(ctx context.Context, args map[string]any) []Action) error {
	kept, err := g.keptAmounts(ctx)
	if err != nil {
		return err
	}
	byArgs := make(map[string]store.Amount, len(kept))
	for _, r := range kept {
		byArgs[r.ArgsSHA256] = r
	}
	live := map[string][]*reservation{}
	cutoff := g.now().Add(-usageHorizon)
	for _, e := range entries {
		if e.Tool != tool || e.RequestID == "" {
			continue
		}
		switch e.Kind {
		case vocab.KindApprovalRequested:
			at, err := time.Parse(time.RFC3339Nano, e.Time)
			if err != nil || at.Before(cutoff) {
				continue
			}
			acts := keptActions(e.ArgsSHA256, byArgs)
			var args map[string]any
			if acts == nil && json.Unmarshal(e.Args, &args) == nil {
				acts = actions(ctx, args)
			}
			var counted []*reservation
			g.usage.mu.Lock()
			for _, a := range acts {
				if a.Call != nil {
					counted = append(counted, g.usage.add(keysOf(e.Agent, a.Tool, a.Call.Value), a.Call.Value, at))
				}
			}
			g.usage.mu.Unlock()
			if len(counted) > 0 {
				live[e.RequestID] = counted
			}
		case vocab.KindApprovalDenied, vocab.KindApprovalExpired, vocab.KindApprovalCancelled, vocab.KindCallFailed:
			for _, r := range live[e.RequestID] {
				g.usage.release(r)
			}
			delete(live, e.RequestID)
		case vocab.KindCallExecuted:
			delete(live, e.RequestID) // its token was issued: it keeps counting
		}
	}
	for id, counted := range live {
		go g.countWhileLive(id, counted)
	}
	return nil
}

// keptActions are the actions of the backchannel request whose arguments'
// SHA-256 is request, as keepActions kept them (tool and value, which is
// all the windows need); nil when none were kept.
func keptActions(request string, byArgs map[string]store.Amount) []Action {
	if request == "" {
		return nil
	}
	var out []Action
	for i := 0; ; i++ {
		r, ok := byArgs[actionSHA256(request, i)]
		if !ok {
			return out
		}
		out = append(out, Action{Tool: r.Tool, Call: &tools.Call{Value: keptValue(r)}})
	}
}
