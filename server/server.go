// Package server exposes Countersign's guarded tools over MCP: stdio,
// Streamable HTTP (/mcp) and SSE (/sse, /message).
//
// Every tool call passes through one guard (a tool-handler middleware):
// it validates the arguments against the tool's schema, lets the tool check
// them and gather facts, asks the policy, raises an approval request when the
// policy wants a human, runs the backend at most once, and records each step
// in the audit log. No tool handler decides anything for itself.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// Recorder appends to the audit log; *audit.Log satisfies it. An append
// that fails stops the action it would have recorded.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Approvals gets a human's countersignature; *approval.Service satisfies it.
type Approvals interface {
	Create(ctx context.Context, r approval.NewRequest) (*approval.Request, error)
	Wait(ctx context.Context, id string) (*approval.Request, error)
	Cancel(ctx context.Context, id, reason string) error
	BeginExecution(ctx context.Context, id string) error
	Finish(ctx context.Context, id string, ok bool, result json.RawMessage) error
	Poll(ctx context.Context, id, agent string) (*approval.PollStatus, error)
}

// Options wires a Server.
type Options struct {
	Config    *config.Config
	Tools     *tools.Registry
	Policy    *authz.Policy
	Audit     Recorder
	Approvals Approvals // nil: high and critical calls are refused
	Version   string
	Logger    *slog.Logger
	Now       func() time.Time
}

// Server is the MCP face of Countersign.
type Server struct {
	opts    Options
	log     *slog.Logger
	mcp     *mcpserver.MCPServer
	tools   map[string]*guarded
	now     func() time.Time
	waiting sessions
	bg      sync.WaitGroup  // poll-mode executions still running
	life    context.Context // cancelled by Close: poll-mode waits stop then
	stop    context.CancelFunc
}

type guarded struct {
	tool   *tools.Tool
	schema *schema
	conf   config.Tool
}

// New builds the MCP server and registers every configured tool.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, log: opts.Logger, tools: map[string]*guarded{}, now: opts.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.waiting.cancels = map[string]map[*context.CancelFunc]struct{}{}
	s.life, s.stop = context.WithCancel(context.Background())
	hooks := &mcpserver.Hooks{}
	hooks.AddOnUnregisterSession(func(_ context.Context, cs mcpserver.ClientSession) {
		s.waiting.cancelAll(cs.SessionID())
	})
	s.mcp = mcpserver.NewMCPServer(opts.Config.Server.Name, opts.Version,
		mcpserver.WithToolCapabilities(false),
		mcpserver.WithLogging(),
		mcpserver.WithRecovery(),
		mcpserver.WithHooks(hooks),
		mcpserver.WithLogger(s.log),
		mcpserver.WithToolHandlerMiddleware(s.guard),
		mcpserver.WithInstructions("Countersign tools. Routine calls run at once; high-risk calls "+
			"wait for a human to approve them with a security key and report progress while they wait."),
	)
	all := opts.Tools.Tools()
	if _, ok := opts.Config.Tools["approval_status"]; ok {
		all = append(all, s.approvalStatusTool())
	}
	for _, t := range all {
		sch, err := compileSchema(t.Def.Name, t.Def.RawInputSchema)
		if err != nil {
			return nil, err
		}
		s.tools[t.Def.Name] = &guarded{tool: t, schema: sch, conf: opts.Config.Tools[t.Def.Name]}
		s.mcp.AddTool(t.Def, s.execute(t))
	}
	return s, nil
}

// ServeStdio serves one agent on in/out until ctx ends or in closes.
// Calls waiting for a human hold a worker, so the pool is sized from config.
func (s *Server) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	stdio := mcpserver.NewStdioServer(s.mcp)
	mcpserver.WithWorkerPoolSize(s.opts.Config.Server.Workers)(stdio)
	mcpserver.WithQueueSize(4 * s.opts.Config.Server.Workers)(stdio)
	stdio.SetErrorLogger(slog.NewLogLogger(s.log.Handler(), slog.LevelError))
	stdio.SetContextFunc(func(ctx context.Context) context.Context { return withAgent(ctx, "stdio") })
	return stdio.Listen(ctx, in, out)
}

// HTTPHandler serves Streamable HTTP at /mcp and SSE at /sse and /message,
// behind a Host check, bearer authentication and a body size limit. shutdown closes the
// transports' sessions.
func (s *Server) HTTPHandler(baseURL string) (h http.Handler, shutdown func(context.Context) error) {
	cfg := s.opts.Config.HTTP
	ctxFunc := func(ctx context.Context, r *http.Request) context.Context {
		return withAgent(ctx, agentFrom(r.Context()))
	}
	streamable := mcpserver.NewStreamableHTTPServer(s.mcp,
		mcpserver.WithEndpointPath("/mcp"),
		mcpserver.WithHTTPContextFunc(ctxFunc),
		mcpserver.WithStreamableHTTPLogger(s.log),
		mcpserver.WithHeartbeatInterval(15*time.Second),
	)
	sse := mcpserver.NewSSEServer(s.mcp,
		mcpserver.WithBaseURL(baseURL),
		mcpserver.WithSSEEndpoint("/sse"),
		mcpserver.WithMessageEndpoint("/message"),
		mcpserver.WithSSEContextFunc(ctxFunc),
		mcpserver.WithKeepAlive(true),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", streamable)
	mux.Handle("/sse", sse.SSEHandler())
	mux.Handle("/message", sse.MessageHandler())
	h = checkHost(cfg.AllowedHosts, authenticate(cfg.Agents, s.log, limitBody(cfg.MaxBodyBytes, mux)))
	shutdown = func(ctx context.Context) error {
		return errors.Join(streamable.Shutdown(ctx), sse.Shutdown(ctx))
	}
	return h, shutdown
}

// Close stops waiting for poll-mode approvals (they become cancelled) and
// waits for executions already under way to finish.
func (s *Server) Close() {
	s.stop()
	s.bg.Wait()
}

// sessions tracks the cancel functions of calls waiting for a human, per
// MCP session, because SSE does not cancel a handler when its client goes.
type sessions struct {
	mu      sync.Mutex
	cancels map[string]map[*context.CancelFunc]struct{}
}

func (w *sessions) add(session string, cancel *context.CancelFunc) (remove func()) {
	if session == "" {
		return func() {}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancels[session] == nil {
		w.cancels[session] = map[*context.CancelFunc]struct{}{}
	}
	w.cancels[session][cancel] = struct{}{}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.cancels[session], cancel)
		if len(w.cancels[session]) == 0 {
			delete(w.cancels, session)
		}
	}
}

func (w *sessions) cancelAll(session string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.cancels[session] {
		(*c)()
	}
	delete(w.cancels, session)
}

func toolError(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, args...))
}
