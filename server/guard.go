package server

import (
	"context"
	"encoding/hex"
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
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// execute is what mcp-go registers for each tool. It is a tripwire: the
// guard never calls it, so reaching it means a call bypassed the guard.
func (s *Server) execute(t *tools.Tool) mcpserver.ToolHandlerFunc {
	return func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s.log.Error("tool handler reached without the guard", "tool", t.Def.Name)
		return toolError("internal error: %s was not guarded; refusing to run it", t.Def.Name), nil
	}
}

// guard is the single seam where every tool call is validated, decided,
// countersigned when needed, run at most once, and audited.
func (s *Server) guard(mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		name := req.Params.Name
		entry := audit.Entry{Agent: agentFrom(ctx), Tool: name}
		g, ok := s.tools[name]
		if !ok {
			entry.Kind, entry.Reason = audit.KindCallRejected, "unknown tool"
			s.record(ctx, entry)
			return toolError("unknown tool %q", name), nil
		}
		args, ok := req.Params.Arguments.(map[string]any)
		if req.Params.Arguments == nil {
			args, ok = map[string]any{}, true
		}
		if !ok {
			entry.Kind, entry.Reason = audit.KindCallRejected, "arguments are not a JSON object"
			s.record(ctx, entry)
			return toolError("invalid arguments: expected a JSON object"), nil
		}
		argsJSON, err := canonicalArgs(args)
		if err == nil {
			err = g.schema.validate(argsJSON)
		}
		s.setArgs(&entry, g.conf, argsJSON)
		if err != nil {
			entry.Kind, entry.Reason = audit.KindCallRejected, err.Error()
			s.record(ctx, entry)
			return toolError("%v", err), nil
		}
		call, err := g.tool.Prepare(ctx, args)
		if err != nil {
			var argErr *tools.ArgError
			if errors.As(err, &argErr) {
				entry.Kind, entry.Reason = audit.KindCallRejected, "invalid arguments: "+err.Error()
				s.record(ctx, entry)
				return toolError("invalid arguments: %v", err), nil
			}
			// The backend could not gather the facts the policy needs: deny.
			entry.Kind, entry.Decision, entry.Reason = audit.KindCallDenied, config.LevelDeny, "cannot evaluate policy: "+err.Error()
			s.record(ctx, entry)
			return toolError("refused: cannot evaluate policy: %v", err), nil
		}
		if argsJSON, err = canonicalArgs(call.Args); err != nil {
			return toolError("invalid arguments: %v", err), nil
		}
		s.setArgs(&entry, g.conf, argsJSON)

		d := s.opts.Policy.Decide(authz.Input{
			Tool: name, Agent: entry.Agent, Args: call.Args, Facts: call.Facts, Now: s.now(),
		})
		entry.Decision, entry.Rule, entry.Reason = d.Level, strings.Join(d.Rules, ","), d.Reason
		switch d.Level {
		case config.LevelLow:
			entry.Kind = audit.KindCallAllowed
			if !s.record(ctx, entry) {
				return toolError("refused: the audit log cannot record this call"), nil
			}
			res, _, _ := s.run(ctx, g, call, entry)
			return res, nil
		case config.LevelHigh, config.LevelCritical:
			return s.countersign(ctx, req, g, call, argsJSON, d, entry), nil
		default:
			entry.Kind = audit.KindCallDenied
			s.record(ctx, entry)
			return toolError("denied by policy: %s", d.Reason), nil
		}
	}
}

// countersign raises an approval request and, in block mode, waits for a
// terminal decision before running the backend once.
func (s *Server) countersign(ctx context.Context, req mcp.CallToolRequest, g *guarded, call *tools.Call,
	argsJSON []byte, d authz.Decision, entry audit.Entry) *mcp.CallToolResult {
	if s.opts.Approvals == nil {
		entry.Kind, entry.Reason = audit.KindCallDenied, "approval required, but approvals are not available"
		s.record(ctx, entry)
		return toolError("approval required (%s): %s; no approval service is running", d.Level, d.Reason)
	}
	r, err := s.opts.Approvals.Create(ctx, approval.NewRequest{
		Tool: g.tool.Def.Name, Agent: entry.Agent, Args: argsJSON,
		AuthorizationDetails: call.Details, Summary: call.Summary,
		Level: d.Level, Rule: entry.Rule, Approvers: d.Approvers, Quorum: d.Quorum,
		UserVerification: d.UserVerification, Timeout: d.Timeout, RedactArgs: g.conf.RedactArgs,
	})
	if err != nil {
		s.log.Error("cannot raise approval request", "tool", g.tool.Def.Name, "err", err)
		entry.Kind, entry.Reason = audit.KindCallDenied, "cannot raise an approval request: "+err.Error()
		s.record(ctx, entry)
		return toolError("refused: cannot raise an approval request: %v", err)
	}
	entry.RequestID = r.ID
	s.log.Info("approval required", "tool", g.tool.Def.Name, "agent", entry.Agent,
		"level", d.Level, "auth_req_id", r.ID, "code", r.Code, "url", r.URL)

	if d.Wait == "poll" {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.executeWhenApproved(r.ID, g, call, entry)
		}()
		return structured(pendingResult(r, s.now()))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cs := mcpserver.ClientSessionFromContext(ctx); cs != nil {
		defer s.waiting.add(cs.SessionID(), &cancel)()
	}
	s.tell(ctx, r)
	stop := s.heartbeat(ctx, req, r)
	elicited := s.elicit(ctx, r)
	final, err := s.opts.Approvals.Wait(ctx, r.ID)
	stop()
	elicited()
	if err != nil {
		return toolError("approval request %s: %v", r.ID, err)
	}
	if final.State != approval.StateApproved {
		return toolError("%s", outcome(final))
	}
	res, _ := s.runApproved(ctx, r.ID, g, call, entry)
	return res
}

// executeWhenApproved is the poll-mode path: the agent has its auth_req_id
// and asks approval_status; the backend runs here once the humans approve.
func (s *Server) executeWhenApproved(id string, g *guarded, call *tools.Call, entry audit.Entry) {
	ctx, cancel := context.WithCancel(s.life)
	defer cancel()
	final, err := s.opts.Approvals.Wait(ctx, id)
	if err != nil || final.State != approval.StateApproved {
		return
	}
	s.runApproved(ctx, id, g, call, entry)
}

// runApproved claims the approved request for its one execution, runs it to
// completion even if the caller leaves now, and stores the outcome.
func (s *Server) runApproved(ctx context.Context, id string, g *guarded, call *tools.Call, entry audit.Entry) (*mcp.CallToolResult, bool) {
	if err := s.opts.Approvals.BeginExecution(ctx, id); err != nil {
		return toolError("refused to run approved request %s: %v", id, err), false
	}
	ctx = context.WithoutCancel(ctx)
	res, content, ok := s.run(ctx, g, call, entry)
	if err := s.opts.Approvals.Finish(ctx, id, ok, content); err != nil {
		s.log.Error("cannot store approval outcome", "auth_req_id", id, "err", err)
	}
	return res, ok
}

// run executes the backend once and records what happened.
func (s *Server) run(ctx context.Context, g *guarded, call *tools.Call, entry audit.Entry) (*mcp.CallToolResult, json.RawMessage, bool) {
	res, err := safeRun(ctx, g.tool, call)
	if err != nil {
		entry.Kind, entry.Reason = audit.KindCallFailed, err.Error()
		s.record(ctx, entry)
		msg, _ := json.Marshal(map[string]string{"error": err.Error()})
		return toolError("%s failed: %v", g.tool.Def.Name, err), msg, false
	}
	entry.Kind, entry.Reason = audit.KindCallExecuted, ""
	if rec, err := json.Marshal(res.Record); err == nil {
		entry.Result = rec
	}
	s.record(ctx, entry)
	content, err := json.Marshal(res.Content)
	if err != nil {
		return toolError("%s: cannot encode result: %v", g.tool.Def.Name, err), nil, false
	}
	return mcp.NewToolResultStructured(res.Content, string(content)), content, true
}

func safeRun(ctx context.Context, t *tools.Tool, call *tools.Call) (res *tools.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("backend panicked: %v", p)
		}
	}()
	res, err = t.Run(ctx, call)
	if err == nil && res == nil {
		err = errors.New("backend returned no result")
	}
	return res, err
}

// record appends to the audit log and reports whether it is durable.
func (s *Server) record(ctx context.Context, e audit.Entry) bool {
	if _, err := s.opts.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit append failed", "kind", e.Kind, "tool", e.Tool, "err", err)
		return false
	}
	return true
}

func (s *Server) setArgs(e *audit.Entry, conf config.Tool, argsJSON []byte) {
	e.Args, e.ArgsRedact, e.ArgsSHA256 = nil, false, ""
	sum, err := digest.ArgsSHA256(argsJSON)
	if err != nil {
		return
	}
	e.ArgsSHA256 = hex.EncodeToString(sum[:])
	if conf.RedactArgs {
		e.ArgsRedact = true
	} else {
		e.Args = json.RawMessage(argsJSON)
	}
}

func outcome(r *approval.Request) string {
	switch r.State {
	case approval.StateDenied:
		return fmt.Sprintf("denied by %s at %s%s (auth_req_id %s)", r.DecidedBy,
			r.DecidedAt.UTC().Format(time.RFC3339), because(r.Reason), r.ID)
	case approval.StateExpired:
		return fmt.Sprintf("approval request %s expired at %s without a decision",
			r.ID, r.ExpiresAt.UTC().Format(time.RFC3339))
	case approval.StateCancelled:
		return fmt.Sprintf("approval request %s was cancelled%s", r.ID, because(r.Reason))
	}
	return fmt.Sprintf("approval request %s ended in state %s", r.ID, r.State)
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

func structured(v any) *mcp.CallToolResult {
	text, _ := json.Marshal(v)
	return mcp.NewToolResultStructured(v, string(text))
}
