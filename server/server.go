// Package server exposes Countersign's guarded tools over MCP: stdio,
// Streamable HTTP (/mcp) and SSE (/sse, /message).
//
// It keeps transports, agent authentication and Host checks. Every tool
// call is handed to the guard (package guard), which validates, decides,
// gets a countersignature when needed, runs the tool at most once, and
// records each step; no tool handler decides anything for itself. The
// tools offered follow the catalog: when an upstream's tools change, the
// server's list changes and its clients are told (tools/list_changed).
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// Options wires a Server.
type Options struct {
	Config  *config.Config
	Catalog *tools.Catalog
	Guard   *guard.Guard
	Version string
	Logger  *slog.Logger
	// Routes are served on the agent listener beside MCP, by path, behind
	// the Host check and the body limit but not bearer authentication:
	// they authenticate their own clients (CIBA, package ciba, whose
	// discovery document and key set are public).
	Routes map[string]http.Handler
	// RoutineTasks, when set, keep routine calls' tasks where every
	// replica reads them (tasks.go); nil: in this process's memory.
	RoutineTasks RoutineTasks
	// Holders, when set, reads which approvers have an enrolled, unrevoked
	// key, so that what a waiting agent is told names those who can
	// approve now apart from those who must enroll a key first; nil: all
	// are named as able.
	Holders func(context.Context) (map[string]bool, error)
}

// Server is the MCP face of Countersign.
type Server struct {
	opts     Options
	log      *slog.Logger
	mcp      *mcpserver.MCPServer
	callers  sessions
	sessions *agentSessions               // Streamable HTTP session ids and their agents
	agents   atomic.Pointer[[]agentToken] // http.agents' tokens (SetAgents)
	auth     liveAuth                     // http.oauth and the names a token may not take (oauth.go)

	syncMu   sync.Mutex
	offered  map[string]*tools.Spec          // what the MCP server has registered now
	taskable map[string]bool                 // offered tools a client may call as a task
	hidden   atomic.Pointer[map[string]bool] // registered tools left out of tools/list: held ones

	// MCP tasks (tasks.go).
	routine    routineTasks
	life       context.Context // ends with Close: task watchers stop
	stop       context.CancelFunc
	watchMu    sync.Mutex
	watching   map[string]bool // task ids whose status is being reported
	watchers   sync.WaitGroup
	stdioMu    sync.Mutex
	stdioOut   io.Writer // while ServeStdio runs
	stdioAgent string
}

// New builds the MCP server and offers every tool in the catalog, now and
// as it changes.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, log: opts.Logger, offered: map[string]*tools.Spec{}, taskable: map[string]bool{},
		sessions: newAgentSessions(), watching: map[string]bool{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.auth.oauth = opts.Config.HTTP.OAuth
	s.SetAgents(opts.Config.HTTP.Agents)
	s.routine.now, s.routine.kept, s.routine.log = time.Now, opts.RoutineTasks, s.log
	s.life, s.stop = context.WithCancel(context.Background())
	s.callers.cancels = map[string]map[*context.CancelFunc]struct{}{}
	hooks := &mcpserver.Hooks{}
	hooks.AddOnUnregisterSession(func(_ context.Context, cs mcpserver.ClientSession) {
		s.callers.cancelAll(cs.SessionID())
		s.sessions.end(cs.SessionID())
	})
	// Held tools (tools.Spec.Held) are registered but not listed.
	hooks.AddAfterListTools(func(_ context.Context, _ any, _ *mcp.ListToolsRequest, res *mcp.ListToolsResult) {
		if hidden := s.hidden.Load(); res != nil && hidden != nil && len(*hidden) > 0 {
			res.Tools = slices.DeleteFunc(res.Tools, func(t mcp.Tool) bool { return (*hidden)[t.Name] })
		}
	})
	// mcp-go answers a call to a tool it does not list before any handler
	// runs; record those refusals as well.
	hooks.AddOnError(func(ctx context.Context, _ any, method mcp.MCPMethod, message any, err error) {
		req, ok := message.(*mcp.CallToolRequest)
		if method != mcp.MethodToolsCall || !ok || !errors.Is(err, mcpserver.ErrToolNotFound) {
			return
		}
		s.opts.Guard.Reject(ctx, AgentFrom(ctx), req.Params.Name)
	})
	s.mcp = mcpserver.NewMCPServer(opts.Config.Server.Name, opts.Version,
		mcpserver.WithToolCapabilities(true),
		// tasks/list, tasks/cancel and task-augmented tools/call; the
		// methods themselves are answered in tasks.go, not by mcp-go.
		mcpserver.WithTaskCapabilities(true, true, true),
		mcpserver.WithLogging(),
		mcpserver.WithRecovery(),
		mcpserver.WithHooks(hooks),
		mcpserver.WithLogger(s.log),
		mcpserver.WithInstructions("Countersign tools. Routine calls run at once; high-risk calls "+
			"wait for a human to approve them with a security key and report progress while they wait."),
	)
	s.sync()
	opts.Catalog.OnChange(s.sync)
	return s, nil
}

// sync makes the MCP server offer exactly the catalog's tools. mcp-go tells
// connected clients when the list changes.
func (s *Server) sync() {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	specs := s.opts.Catalog.Specs()
	var add []mcpserver.ServerTool
	now := make(map[string]*tools.Spec, len(specs))
	hidden := map[string]bool{}
	taskable := make(map[string]bool, len(specs))
	for _, spec := range specs {
		now[spec.Def.Name] = spec
		if spec.Held != nil {
			// Registered, so that its calls reach the guard and are
			// refused with the reason, but left out of tools/list.
			hidden[spec.Def.Name] = true
			if s.offered[spec.Def.Name] != spec {
				add = append(add, mcpserver.ServerTool{Tool: spec.Def, Handler: s.handle})
			}
			continue
		}
		def := spec.Def
		if s.opts.Guard.MayCountersign(spec) {
			// A call that may wait for a human may be a task; one
			// that never waits gains nothing from being one.
			taskable[def.Name] = true
			def.Execution = &mcp.ToolExecution{TaskSupport: mcp.TaskSupportOptional}
		}
		if s.offered[spec.Def.Name] != spec {
			add = append(add, mcpserver.ServerTool{Tool: def, Handler: s.handle})
		}
	}
	var remove []string
	for name := range s.offered {
		if _, ok := now[name]; !ok {
			remove = append(remove, name)
		}
	}
	slices.Sort(remove)
	s.offered, s.taskable = now, taskable
	s.hidden.Store(&hidden)
	if len(remove) > 0 {
		s.mcp.DeleteTools(remove...)
	}
	if len(add) > 0 {
		s.mcp.AddTools(add...)
	}
}

// handle hands one tools/call to the guard. The call's context ends when
// its session does, because SSE does not cancel a handler when its client
// goes.
func (s *Server) handle(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cs := mcpserver.ClientSessionFromContext(ctx); cs != nil {
		defer s.callers.add(cs.SessionID(), &cancel)()
	}
	p := s.progressFor(req)
	if p != nil {
		ctx = tools.WithProgress(ctx, func(done, total float64, message string) {
			p.forward(ctx, done, total, message)
		})
	}
	return s.opts.Guard.Handle(ctx, guard.Call{
		Tool: req.Params.Name, Agent: AgentFrom(ctx), Args: req.Params.Arguments, Raw: req.Params.RawArguments,
		Waiting: s.waiting(p),
	}), nil
}

// ServeStdio serves one agent on in/out until ctx ends or in closes.
// Calls waiting for a human hold a worker, so the pool is sized from config.
func (s *Server) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	stdio := mcpserver.NewStdioServer(s.mcp)
	mcpserver.WithWorkerPoolSize(s.opts.Config.Server.Workers)(stdio)
	mcpserver.WithQueueSize(4 * s.opts.Config.Server.Workers)(stdio)
	stdio.SetErrorLogger(slog.NewLogLogger(s.log.Handler(), slog.LevelError))
	agent := s.opts.Config.Server.StdioAgent
	if agent == "" {
		agent = "stdio"
	}
	stdio.SetContextFunc(func(ctx context.Context) context.Context { return WithAgent(ctx, agent) })
	locked := &lockedWriter{w: out}
	s.stdioMu.Lock()
	s.stdioOut, s.stdioAgent = locked, agent
	s.stdioMu.Unlock()
	defer func() {
		s.stdioMu.Lock()
		s.stdioOut = nil
		s.stdioMu.Unlock()
	}()
	in, stopTasks := s.stdioTasks(ctx, agent, in, locked)
	defer stopTasks()
	return stdio.Listen(ctx, in, locked)
}

// Close stops reporting task status changes. Tasks themselves live on in
// the approval store.
func (s *Server) Close() {
	s.watchMu.Lock()
	s.stop()
	s.watchMu.Unlock()
	s.watchers.Wait()
}

// HTTPHandler serves Streamable HTTP at /mcp and SSE at /sse and /message,
// behind a Host check, bearer authentication and a body size limit. shutdown closes the
// transports' sessions.
func (s *Server) HTTPHandler(baseURL string) (h http.Handler, shutdown func(context.Context) error) {
	cfg := s.opts.Config.HTTP
	ctxFunc := func(ctx context.Context, r *http.Request) context.Context {
		return WithAgent(ctx, AgentFrom(r.Context()))
	}
	streamable := mcpserver.NewStreamableHTTPServer(s.mcp,
		mcpserver.WithEndpointPath("/mcp"),
		mcpserver.WithHTTPContextFunc(ctxFunc),
		mcpserver.WithStreamableHTTPLogger(s.log),
		mcpserver.WithHeartbeatInterval(15*time.Second),
		mcpserver.WithSessionIdManagerResolver(s.sessions),
	)
	sse := mcpserver.NewSSEServer(s.mcp,
		mcpserver.WithBaseURL(baseURL),
		mcpserver.WithSSEEndpoint("/sse"),
		mcpserver.WithMessageEndpoint("/message"),
		// A relative endpoint resolves against whatever name the client
		// reached /sse by (localhost, a proxy's name); a full URL built
		// from the listener's address fails clients that check origins.
		mcpserver.WithUseFullURLForMessageEndpoint(false),
		mcpserver.WithSSEContextFunc(ctxFunc),
		mcpserver.WithKeepAlive(true),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.sessions.checkSession(s.answerTasksHTTP(streamable), s.callers.cancelAll))
	mux.Handle("/sse", sse.SSEHandler())
	mux.Handle("/message", refuseTasksSSE(sse.MessageHandler()))
	root := http.NewServeMux()
	resourceURL := baseURL
	if cfg.Issuer != "" {
		resourceURL = cfg.Issuer
	}
	rs := s.auth.add(resourceURL, s.log)
	root.Handle("/", authenticate(&s.agents, rs, s.log, limitBody(cfg.MaxBodyBytes, mux)))
	// Served while http.oauth is on, which a reload may change.
	prm := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if now := rs.Load(); now != nil {
			auth.ProtectedResourceMetadataHandler(now.metadata()).ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	})
	root.Handle(metadataPath, prm)
	root.Handle(metadataPathMCP, prm)
	for path, rh := range s.opts.Routes {
		root.Handle(path, limitBody(cfg.MaxBodyBytes, rh))
	}
	h = checkHost(cfg.AllowedHosts, root)
	shutdown = func(ctx context.Context) error {
		return errors.Join(streamable.Shutdown(ctx), sse.Shutdown(ctx))
	}
	return h, shutdown
}

// sessions tracks the cancel functions of running calls, per MCP session,
// because SSE does not cancel a handler when its client goes.
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
