package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// tell sends the agent, once, where a human approves this request. Clients
// show MCP log messages to their user; the URL is also printed on stderr.
func (s *Server) tell(ctx context.Context, r *approval.Request) {
	msg := mcp.NewLoggingMessageNotification(mcp.LoggingLevelNotice, "countersign", map[string]any{
		"message":         "approval required: " + r.BindingMessage,
		"auth_req_id":     r.ID,
		"binding_message": r.BindingMessage,
		"approval_url":    r.URL,
		"expires_at":      r.ExpiresAt.UTC().Format(time.RFC3339),
	})
	if err := s.mcp.SendLogMessageToClient(ctx, msg); err != nil {
		s.log.Debug("cannot send log message to client", "err", err)
	}
}

// heartbeat sends progress notifications while the call waits. Many clients
// give up on a silent call after 60 s, and a notification sent just before
// the result can be lost, so it beats steadily rather than only on change.
func (s *Server) heartbeat(ctx context.Context, req mcp.CallToolRequest, r *approval.Request) (stop func()) {
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return func() {}
	}
	token := req.Params.Meta.ProgressToken
	every := s.opts.Config.Approval.ProgressEvery
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for n := 1; ; n++ {
			left := time.Until(r.ExpiresAt).Round(time.Second)
			if left < 0 {
				left = 0
			}
			err := s.mcp.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
				"progressToken": token,
				"progress":      n,
				"message": fmt.Sprintf("waiting for approval by %s at %s, expires in %s, code %s",
					waitingFor(r), r.URL, left, r.Code),
			})
			if err != nil {
				s.log.Debug("cannot send progress", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

func waitingFor(r *approval.Request) string {
	who := strings.Join(r.ApproverNames, ", ")
	if who == "" {
		who = strings.Join(r.Approvers, ", ")
	}
	if r.Quorum > 1 {
		return fmt.Sprintf("%d of %s (%d so far)", r.Quorum, who, len(r.Approvals))
	}
	return who
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

// approvalStatusTool answers a poll-mode agent in CIBA terms.
func (s *Server) approvalStatusTool() *tools.Tool {
	def := mcp.NewToolWithRawSchema("approval_status",
		"Check an approval request raised by a tool call in poll mode. Returns status "+
			"authorization_pending, slow_down (poll less often), expired_token, access_denied, "+
			"or the tool's result once approved and executed.",
		json.RawMessage(`{"type":"object","properties":{"auth_req_id":{"type":"string","format":"uuid",`+
			`"description":"The auth_req_id the tool call returned."}},"required":["auth_req_id"],"additionalProperties":false}`))
	def.Annotations = mcp.ToolAnnotation{
		Title: "Approval status", ReadOnlyHint: mcp.ToBoolPtr(true), DestructiveHint: mcp.ToBoolPtr(false),
		IdempotentHint: mcp.ToBoolPtr(false), OpenWorldHint: mcp.ToBoolPtr(false),
	}
	return &tools.Tool{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			return &tools.Call{Args: args}, nil
		},
		Run: func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
			if s.opts.Approvals == nil {
				return nil, fmt.Errorf("no approval service is running")
			}
			id, _ := call.Args["auth_req_id"].(string)
			ps, err := s.opts.Approvals.Poll(ctx, id, agentFrom(ctx))
			if err != nil {
				return nil, err
			}
			out := map[string]any{"auth_req_id": id, "status": ps.Status}
			if r := ps.Request; r != nil {
				out["interval"] = int(r.Interval.Seconds())
				out["state"] = r.State
				if len(r.Result) > 0 {
					out["result"] = r.Result
				}
				if r.State == approval.StateDenied || r.State == approval.StateExpired || r.State == approval.StateCancelled {
					out["error_description"] = outcome(r)
				}
			}
			return &tools.Result{Content: out, Record: map[string]any{"auth_req_id": id, "status": ps.Status}}, nil
		},
	}
}

// elicit offers the approval URL through URL-mode elicitation where the
// client declared support for it. Under 2026-07-28 servers cannot send
// requests, and SSE sessions cannot carry them: there the log message and
// progress carry the URL. The answer does not matter: the decision is made
// with a security key on the page, never by the agent's client.
func (s *Server) elicit(ctx context.Context, r *approval.Request) (done func()) {
	cs, ok := mcpserver.ClientSessionFromContext(ctx).(mcpserver.SessionWithClientInfo)
	if !ok {
		return func() {}
	}
	caps := cs.GetClientCapabilities()
	if caps.Elicitation == nil || caps.Elicitation.URL == nil {
		return func() {}
	}
	ectx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := s.mcp.RequestURLElicitation(ectx, cs, r.ID, r.URL,
			"Ask an approver to open this page and approve with their security key: "+r.BindingMessage)
		if err != nil {
			s.log.Debug("URL elicitation not delivered", "auth_req_id", r.ID, "err", err)
		}
	}()
	return func() {
		if err := s.mcp.SendElicitationComplete(ctx, cs, r.ID); err != nil {
			s.log.Debug("elicitation complete not delivered", "err", err)
		}
		cancel()
		<-finished
	}
}
