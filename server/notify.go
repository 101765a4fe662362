package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/guard"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// waiting keeps the caller of a call that waits for a human informed: a
// log message with the approval URL, progress heartbeats, and URL
// elicitation where the client supports it.
func (s *Server) waiting(p *progress) func(ctx context.Context, r *guard.Request) func() {
	return func(ctx context.Context, r *guard.Request) func() {
		s.tell(ctx, r)
		stop := s.heartbeat(ctx, p, r)
		elicited := s.elicit(ctx, r)
		return func() { stop(); elicited() }
	}
}

// tell sends the agent, once, where a human approves this request. Clients
// show MCP log messages to their user; the URL is also printed on stderr.
func (s *Server) tell(ctx context.Context, r *guard.Request) {
	msg := mcp.NewLoggingMessageNotification(mcp.LoggingLevelNotice, "countersign", map[string]any{
		"message":         "approval required: " + r.BindingMessage,
		"auth_req_id":     r.ID,
		"binding_message": r.BindingMessage,
		"approval_url":    r.URL,
		"expires_at":      r.ExpiresAt.UTC().Format(time.RFC3339),
		"waiting_for":     waitingFor(r, s.holders(ctx)),
	})
	if err := s.mcp.SendLogMessageToClient(ctx, msg); err != nil {
		s.log.Debug("cannot send log message to client", "err", err)
	}
}

// heartbeat sends progress notifications while the call waits. Many clients
// give up on a silent call after 60 s, and a notification sent just before
// the result can be lost, so it beats steadily rather than only on change.
func (s *Server) heartbeat(ctx context.Context, p *progress, r *guard.Request) (stop func()) {
	if p == nil {
		return func() {}
	}
	every := s.opts.Config.Approval.ProgressEvery
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			left := time.Until(r.ExpiresAt).Round(time.Second)
			if left < 0 {
				left = 0
			}
			p.beat(ctx, fmt.Sprintf("waiting for approval by %s at %s, expires in %s, code %s",
				waitingFor(r, s.holders(ctx)), r.URL, left, r.Code))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// waitingFor says whose approval r waits for. Only an approver with an
// enrolled, unrevoked key can tap, so those who must enroll one first are
// named apart: an agent (or its user) sent to them would wait in vain.
// holders nil (not known) lists every approver as able.
func waitingFor(r *guard.Request, holders map[string]bool) string {
	var now, enroll []string
	for i, id := range r.Approvers {
		name := id
		if i < len(r.ApproverNames) && r.ApproverNames[i] != "" {
			name = r.ApproverNames[i]
		}
		if holders == nil || holders[id] {
			now = append(now, name)
		} else {
			enroll = append(enroll, name)
		}
	}
	who, note := strings.Join(now, ", "), ""
	switch {
	case len(now) == 0:
		who, note = strings.Join(enroll, ", "), " [none can approve yet: each must first enroll a security key]"
	case len(enroll) > 0:
		note = " [can approve now; still to enroll a security key: " + strings.Join(enroll, ", ") + "]"
	}
	if r.Quorum > 1 {
		who = fmt.Sprintf("%d of %s (%d so far)", r.Quorum, who, len(r.Approvals))
	}
	return who + note
}

// holders are the approvers with an enrolled, unrevoked key
// (Options.Holders), or nil when that is not known.
func (s *Server) holders(ctx context.Context) map[string]bool {
	if s.opts.Holders == nil {
		return nil
	}
	h, err := s.opts.Holders(ctx)
	if err != nil {
		s.log.Debug("cannot read which approvers have a key", "err", err)
		return nil
	}
	return h
}

// elicit offers the approval URL through URL-mode elicitation where the
// client declared support for it. Under 2026-07-28 servers cannot send
// requests, and SSE sessions cannot carry them: there the log message and
// progress carry the URL. The answer does not matter: the decision is made
// with a security key on the page, never by the agent's client.
func (s *Server) elicit(ctx context.Context, r *guard.Request) (done func()) {
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

// progress sends one call's progress notifications. MCP wants progress to
// increase; heartbeats and progress forwarded from an upstream tool share
// one counter so the two never make it go backwards.
type progress struct {
	s     *Server
	token mcp.ProgressToken
	mu    sync.Mutex
	last  float64
}

func (s *Server) progressFor(req mcp.CallToolRequest) *progress {
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return nil
	}
	return &progress{s: s, token: req.Params.Meta.ProgressToken}
}

// beat reports one more step of waiting.
func (p *progress) beat(ctx context.Context, message string) {
	p.mu.Lock()
	p.last++
	n := p.last
	p.mu.Unlock()
	p.send(ctx, n, 0, message)
}

// forward reports an upstream tool's progress as it is, unless that would
// go backwards after heartbeats; then it counts on from the last step.
func (p *progress) forward(ctx context.Context, done, total float64, message string) {
	p.mu.Lock()
	if done <= p.last {
		done, total = p.last+1, 0
	}
	p.last = done
	p.mu.Unlock()
	p.send(ctx, done, total, message)
}

func (p *progress) send(ctx context.Context, done, total float64, message string) {
	params := map[string]any{"progressToken": p.token, "progress": done}
	if total > 0 {
		params["total"] = total
	}
	if message != "" {
		params["message"] = message
	}
	if err := p.s.mcp.SendNotificationToClient(ctx, "notifications/progress", params); err != nil {
		p.s.log.Debug("cannot send progress", "err", err)
	}
}
