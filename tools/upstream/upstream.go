// Package upstream makes the tools of MCP servers a team already runs into
// specs of the catalog, so that the guard stands in front of them exactly
// as it stands in front of the built-in tools.
//
// Countersign connects to each configured upstream as an MCP client (the
// official go-sdk client): by running its command over stdio, or at its URL
// over Streamable HTTP, falling back to SSE. It lists the upstream's tools
// and offers each as <prefix><tool> with the upstream's own description,
// schemas and annotations. A call that the guard lets through is one
// tools/call upstream; the upstream's result goes back to the agent
// unchanged. Progress from the upstream reaches the agent. An agent that
// cancels a routine call cancels the upstream call; an approved call is
// not cancelled by its agent leaving (package guard). A call that was sent
// and got no answer (cancelled, timed out after call_timeout, connection
// lost) is a tools.UnknownOutcomeError: the guard records it as
// interrupted, never as failed.
//
// The connection is kept alive: notifications/tools/list_changed re-lists
// the tools (and the catalog tells Countersign's own clients); an upstream
// that goes away is reconnected, a stdio upstream restarted, with capped
// exponential backoff; while it is down its tools answer a clear error.
// Values in env and headers may name variables of Countersign's
// environment as ${NAME}; they are expanded only when connecting, and never
// logged.
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// NamePattern is what MCP clients accept as a tool name; every exposed name
// must match it.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Limits on what an upstream may send, so that a hostile or broken one
// cannot exhaust the gateway.
const (
	maxTools     = 1000
	maxListPages = 100
	maxBackoff   = 30 * time.Second
	minBackoff   = 250 * time.Millisecond
)

// Manager keeps every configured upstream connected and its tools in the
// catalog.
type Manager struct {
	cat     *tools.Catalog
	log     *slog.Logger
	version string
	conns   []*conn
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// Options configure a Manager.
type Options struct {
	Logger  *slog.Logger
	Version string // sent to upstreams as the client's version
	// Getenv expands ${NAME} in env and header values; default os.Getenv.
	Getenv func(string) string
}

// Start connects to every upstream, at once and in parallel, and adds their
// tools to cat. It fails when an upstream marked required cannot be reached
// within its connect_timeout, or when an upstream offers a tool whose
// exposed name would not be a valid MCP tool name; other upstreams that
// cannot be reached are logged and retried in the background.
func Start(ctx context.Context, ups []config.Upstream, cat *tools.Catalog, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	m := &Manager{cat: cat, log: opts.Logger, version: opts.Version, stop: stop}
	for _, u := range ups {
		if u.CallTimeout <= 0 {
			u.CallTimeout = config.DefaultUpstreamCallTimeout
		}
		m.conns = append(m.conns, &conn{
			cfg: u, m: m, getenv: opts.Getenv,
			log:    opts.Logger.With("upstream", u.Name),
			relist: make(chan struct{}, 1),
		})
	}
	errs := make([]error, len(m.conns))
	var wg sync.WaitGroup
	for i, c := range m.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
			defer cancel()
			errs[i] = c.connect(cctx)
		}()
	}
	wg.Wait()
	for i, c := range m.conns {
		err := errs[i]
		var bad *NameError
		switch {
		case err == nil:
		case errors.As(err, &bad):
			m.Close()
			return nil, err
		case c.cfg.Required:
			m.Close()
			return nil, fmt.Errorf("upstream %s (required): %w", c.cfg.Name, err)
		default:
			c.log.Error("upstream unreachable; serving without its tools and retrying", "err", err)
		}
	}
	for _, c := range m.conns {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.keep(life)
		}()
	}
	return m, nil
}

// Close disconnects every upstream and stops their processes.
func (m *Manager) Close() error {
	m.stop()
	for _, c := range m.conns {
		c.close()
	}
	m.wg.Wait()
	return nil
}

// Status is the state of one upstream, for operators.
type Status struct {
	Name  string
	Up    bool
	Tools int
	Err   string // the last connection error while down
}

// Status reports every upstream's state.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.conns))
	for _, c := range m.conns {
		c.mu.Lock()
		s := Status{Name: c.cfg.Name, Up: c.session != nil, Tools: c.tools}
		if c.lastErr != nil && c.session == nil {
			s.Err = c.lastErr.Error()
		}
		c.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// NameError is an upstream tool whose exposed name is not a valid MCP tool
// name.
type NameError struct {
	Upstream, Tool, Exposed string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("upstream %s: tool %q would be exposed as %q, which is not a valid tool name "+
		"(1 to 64 of A-Z a-z 0-9 _ -): choose a shorter prefix, or leave the tool out", e.Upstream, e.Tool, e.Exposed)
}

// conn is one upstream's connection and tools.
type conn struct {
	cfg    config.Upstream
	m      *Manager
	log    *slog.Logger
	getenv func(string) string
	relist chan struct{}

	mu       sync.Mutex
	session  *sdk.ClientSession // nil while down
	lastErr  error
	tools    int
	progress sync.Map // upstream progress token -> tools.Progress
}

// connect opens a session and lists the tools into the catalog.
func (c *conn) connect(ctx context.Context) error {
	client := sdk.NewClient(&sdk.Implementation{Name: "countersign", Version: c.m.version}, &sdk.ClientOptions{
		Logger: c.log,
		// A gateway has no roots of its own to offer; advertising the
		// capability would let an upstream such as the filesystem server
		// trade the directories it was started with for an empty list.
		Capabilities: &sdk.ClientCapabilities{},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) {
			select {
			case c.relist <- struct{}{}:
			default:
			}
		},
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			if p, ok := c.progress.Load(req.Params.ProgressToken); ok {
				p.(tools.Progress)(req.Params.Progress, req.Params.Total, req.Params.Message)
			}
		},
	})
	session, err := c.open(ctx, client)
	if err != nil {
		c.setDown(err)
		return err
	}
	if err := c.list(ctx, session); err != nil {
		session.Close()
		c.setDown(err)
		return err
	}
	c.mu.Lock()
	c.session, c.lastErr = session, nil
	c.mu.Unlock()
	c.log.Info("upstream connected", "tools", c.tools)
	return nil
}

func (c *conn) open(ctx context.Context, client *sdk.Client) (*sdk.ClientSession, error) {
	if len(c.cfg.Command) > 0 {
		cmd := exec.Command(c.cfg.Command[0], c.cfg.Command[1:]...)
		cmd.Dir = c.cfg.Dir
		cmd.Env = c.environ()
		cmd.Stderr = &lineLog{log: c.log}
		return client.Connect(ctx, &sdk.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}, nil)
	}
	hc := &http.Client{Transport: &withHeaders{headers: c.headers(), next: http.DefaultTransport}}
	session, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: c.cfg.URL, HTTPClient: hc, MaxRetries: -1}, nil)
	if err == nil {
		return session, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	session, sseErr := client.Connect(ctx, &sdk.SSEClientTransport{Endpoint: c.cfg.URL, HTTPClient: hc}, nil)
	if sseErr != nil {
		return nil, fmt.Errorf("streamable HTTP: %v; SSE: %v", err, sseErr)
	}
	return session, nil
}

// environ is the upstream's whole environment: a few variables programs
// need to run (npx needs PATH and HOME), plus what the config gives it.
// Countersign's own environment is not passed on, since it may hold secrets
// meant for other upstreams.
func (c *conn) environ() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "USER", "LANG", "TMPDIR", "SYSTEMROOT"} {
		if v, ok := os.LookupEnv(k); ok {
			if _, set := c.cfg.Env[k]; !set {
				env = append(env, k+"="+v)
			}
		}
	}
	for k, v := range c.cfg.Env {
		env = append(env, k+"="+os.Expand(v, c.getenv))
	}
	return env
}

func (c *conn) headers() http.Header {
	h := http.Header{}
	for k, v := range c.cfg.Headers {
		h.Set(k, os.Expand(v, c.getenv))
	}
	return h
}

// list reads the upstream's whole tool list and makes it the upstream's
// contribution to the catalog.
func (c *conn) list(ctx context.Context, session *sdk.ClientSession) error {
	var all []*sdk.Tool
	params := &sdk.ListToolsParams{}
	for page := 0; ; page++ {
		if page == maxListPages {
			return fmt.Errorf("tool list has more than %d pages", maxListPages)
		}
		res, err := session.ListTools(ctx, params)
		if err != nil {
			return fmt.Errorf("listing tools: %w", err)
		}
		all = append(all, res.Tools...)
		if len(all) > maxTools {
			return fmt.Errorf("more than %d tools", maxTools)
		}
		if res.NextCursor == "" {
			break
		}
		params = &sdk.ListToolsParams{Cursor: res.NextCursor}
	}
	specs, err := Specs(c.cfg, all, c.call)
	if err != nil {
		return err
	}
	if err := c.m.cat.Replace(c.cfg.Name, specs); err != nil {
		return err
	}
	c.mu.Lock()
	c.tools = len(specs)
	c.mu.Unlock()
	return nil
}

// keep holds the connection until life ends: it re-lists on
// list_changed, and reconnects with capped exponential backoff when the
// upstream goes away.
func (c *conn) keep(life context.Context) {
	backoff := minBackoff
	for life.Err() == nil {
		c.mu.Lock()
		session := c.session
		c.mu.Unlock()
		if session == nil {
			select {
			case <-life.Done():
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithTimeout(life, c.cfg.ConnectTimeout)
			err := c.connect(ctx)
			cancel()
			if err != nil {
				c.log.Warn("upstream still unreachable", "err", err, "retry_in", min(2*backoff, maxBackoff))
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			backoff = minBackoff
			continue
		}
		closed := make(chan error, 1)
		go func() { closed <- session.Wait() }()
	watch:
		for {
			select {
			case <-life.Done():
				return
			case <-c.relist:
				ctx, cancel := context.WithTimeout(life, c.cfg.ConnectTimeout)
				if err := c.list(ctx, session); err != nil {
					c.log.Error("re-listing tools after list_changed failed", "err", err)
				} else {
					c.log.Info("upstream tools changed", "tools", c.tools)
				}
				cancel()
			case err := <-closed:
				if err == nil {
					err = errors.New("connection closed")
				}
				c.log.Error("upstream went away; reconnecting", "err", err)
				session.Close()
				c.setDown(err)
				break watch
			}
		}
	}
}

func (c *conn) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.session, c.lastErr = nil, err
}

func (c *conn) close() {
	c.mu.Lock()
	session := c.session
	c.session = nil
	c.mu.Unlock()
	if session != nil {
		session.Close()
	}
}

// call runs one tool upstream, forwarding progress and cancellation.
func (c *conn) call(ctx context.Context, tool string, args map[string]any, approval string) (*mcp.CallToolResult, error) {
	c.mu.Lock()
	session, lastErr := c.session, c.lastErr
	c.mu.Unlock()
	if session == nil {
		if lastErr == nil {
			lastErr = errors.New("not connected")
		}
		return nil, &tools.NotSentError{Err: fmt.Errorf("upstream %s is unavailable (reconnecting): %v", c.cfg.Name, lastErr)}
	}
	// However long the agent waits, an upstream that never answers is
	// waited for no longer than this.
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.CallTimeout, errCallTimeout)
	defer cancel()
	params := &sdk.CallToolParams{Name: tool, Arguments: args}
	if p := tools.ProgressFrom(ctx); p != nil {
		token := uuid.NewString()
		c.progress.Store(token, p)
		// A notification sent just before the result can be handled just
		// after it: keep the token a moment longer.
		defer time.AfterFunc(time.Second, func() { c.progress.Delete(token) })
		params.Meta = sdk.Meta{"progressToken": token}
	}
	// An upstream that wants to can check, against Countersign's published
	// keys, that humans approved exactly these arguments.
	if approval != "" {
		if params.Meta == nil {
			params.Meta = sdk.Meta{}
		}
		params.Meta[token.MCPMetaKey] = approval
	}
	res, err := session.CallTool(ctx, params)
	if err != nil {
		return nil, c.callError(ctx, err)
	}
	return convertResult(res)
}

// callError says what a failed tools/call tells about the upstream's
// action. A JSON-RPC error the upstream sent is its answer: the tool ran,
// or refused, and failed. Anything else (the connection lost, the call
// cancelled upstream after it was sent, no answer within call_timeout)
// leaves the outcome unknown: the upstream may have acted. That includes
// the go-sdk's "rejected by transport", which its Streamable HTTP client
// also reports when the POST was delivered and its response was cut off.
// Only a call made while no session is up is known not to have left.
func (c *conn) callError(ctx context.Context, err error) error {
	err = fmt.Errorf("upstream %s: %w", c.cfg.Name, err)
	if context.Cause(ctx) == errCallTimeout {
		err = fmt.Errorf("%w (no answer within call_timeout %s)", err, c.cfg.CallTimeout)
	}
	var wire *jsonrpc.Error
	if errors.As(err, &wire) {
		switch wire.Code {
		case codeServerClosing, codeClientClosing, codeRejected:
			// Made up on our side: the upstream never answered.
		default:
			return err
		}
	}
	return &tools.UnknownOutcomeError{Err: err}
}

// errCallTimeout is why a call's context ends after call_timeout.
var errCallTimeout = errors.New("no answer within call_timeout")

// JSON-RPC error codes the go-sdk client makes up itself, never sent by an
// upstream: calls cut off by the connection closing, and a transport
// failure around the request.
const (
	codeClientClosing = -32003
	codeServerClosing = -32004
	codeRejected      = -32005
)

// convertResult carries the upstream's result over to the server library's
// type through its JSON form, so that nothing of it (content of any kind,
// structuredContent, isError, _meta) is lost or reinterpreted.
func convertResult(res *sdk.CallToolResult) (*mcp.CallToolResult, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("upstream result: %w", err)
	}
	msg := json.RawMessage(raw)
	out, err := mcp.ParseCallToolResult(&msg)
	if err != nil {
		return nil, fmt.Errorf("upstream result: %w", err)
	}
	return out, nil
}

// withHeaders adds the configured headers to every request to an upstream.
type withHeaders struct {
	headers http.Header
	next    http.RoundTripper
}

func (t *withHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header[k] = v
	}
	return t.next.RoundTrip(r)
}

// lineLog sends a stdio upstream's stderr to our log, one record a line.
type lineLog struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

const maxLogLine = 4096

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > maxLogLine {
				l.log.Info("upstream stderr", "line", string(l.buf[:maxLogLine]))
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		line := l.buf[:i]
		if len(line) > maxLogLine {
			line = line[:maxLogLine]
		}
		l.log.Info("upstream stderr", "line", string(line))
		l.buf = l.buf[i+1:]
	}
}
