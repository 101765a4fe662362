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
//
// With [Options].Pins, each tool's definition is pinned on the upstream's
// first connection, and a tool whose later listing differs from its pin is
// held, not offered, until an admin accepts it (see pin.go).
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
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
	// recheckHeld is how often the pins of an upstream with held tools
	// are read again, so that an accept made by another process (the
	// CLI) is honoured without a restart, even if no agent calls the tool.
	recheckHeld = 5 * time.Second
)

// Manager keeps every configured upstream connected and its tools in the
// catalog.
type Manager struct {
	cat     *tools.Catalog
	log     *slog.Logger
	version string
	pins    Pins
	policy  func(exposed string) bool
	recheck time.Duration
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
	// Pins, when set, pins every upstream's tools and holds those whose
	// listing changed. Without it every listed tool is offered as listed
	// (config validate --connect, upstreams diff).
	Pins Pins
	// Policy reports whether a policy under tools: names an exposed tool
	// name; a removed tool's tool.changed entry says its policy now names
	// nothing.
	Policy func(exposed string) bool
	// RecheckHeld is how often the pins of an upstream with held tools are
	// read again; default 5s.
	RecheckHeld time.Duration
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
	if opts.RecheckHeld <= 0 {
		opts.RecheckHeld = recheckHeld
	}
	m := &Manager{cat: cat, log: opts.Logger, version: opts.Version, stop: stop,
		pins: opts.Pins, policy: opts.Policy, recheck: opts.RecheckHeld}
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
	Err   string   // the last connection error while down
	Held  []string // exposed names of the tools held until an admin accepts them
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
		for _, ch := range c.held {
			s.Held = append(s.Held, ch.Exposed)
		}
		slices.Sort(s.Held)
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
	listing  []listedTool      // the last listing
	offered  map[string]string // tool -> hash of the pin its calls run under
	held     map[string]Change // tool -> how its listing differs from its pin
	progress sync.Map          // upstream progress token -> tools.Progress

	settleMu sync.Mutex // one settle at a time
}

// Listed returns the tools server listed last, as pins, and whether
// server is one of the manager's upstreams.
func (m *Manager) Listed(server string) ([]Pin, bool) {
	for _, c := range m.conns {
		if c.cfg.Name == server {
			c.mu.Lock()
			defer c.mu.Unlock()
			out := make([]Pin, len(c.listing))
			for i, l := range c.listing {
				out[i] = l.pin
			}
			return out, true
		}
	}
	return nil, false
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
	c.log.Info("upstream connected", "tools", c.offeredCount())
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
	wh, err := newWithHeaders(c.cfg.Name, c.cfg.URL, c.headers(), http.DefaultTransport)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: wh, CheckRedirect: wh.checkRedirect}
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
	listing, err := describe(c.cfg, all)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.listing = listing
	c.mu.Unlock()
	return c.settle(ctx, true)
}

// settle compares the last listing with the pins and offers the tools
// whose listing matches their pin; the others are held. With relisted
// false (a re-read of the pins) the catalog is touched only if what is
// offered or held changed.
func (c *conn) settle(ctx context.Context, relisted bool) error {
	c.settleMu.Lock()
	defer c.settleMu.Unlock()
	c.mu.Lock()
	listing := c.listing
	c.mu.Unlock()
	changes, err := c.compare(ctx, listing)
	if err != nil && !relisted {
		// A re-read that failed (the caller went away, the database is
		// busy) changes nothing: what is offered still matches its pin.
		return fmt.Errorf("pinned tool definitions: %w", err)
	}
	if err != nil {
		// Fail closed: a new listing that cannot be compared with the
		// pins offers nothing.
		c.mu.Lock()
		c.offered, c.held, c.tools = nil, nil, 0
		c.mu.Unlock()
		c.m.cat.Replace(c.cfg.Name, nil)
		return fmt.Errorf("pinned tool definitions: %w", err)
	}
	byTool := make(map[string]Change, len(changes))
	for _, ch := range changes {
		byTool[ch.Tool] = ch
	}
	specs := make([]*tools.Spec, 0, len(listing))
	offered := make(map[string]string, len(listing))
	held := map[string]Change{}
	for _, l := range listing {
		tool := l.pin.Tool
		if ch, ok := byTool[tool]; ok {
			held[tool] = ch
			specs = append(specs, heldSpec(c.cfg.Name, l.def, ch, func(ctx context.Context) error { return c.release(ctx, tool) }))
			continue
		}
		offered[tool] = l.pin.SHA256
		specs = append(specs, spec(c.cfg.Name, tool, l.def, l.pin.SHA256, c.call, c.pinned))
	}
	c.mu.Lock()
	same := maps.Equal(offered, c.offered) && maps.EqualFunc(held, c.held, func(a, b Change) bool { return a.Listed == b.Listed })
	c.offered, c.held, c.tools = offered, held, len(offered)
	c.mu.Unlock()
	if same && !relisted {
		return nil
	}
	for _, ch := range changes {
		c.log.Warn("upstream tool differs from its pinned definition; held until an admin accepts it",
			"tool", ch.Exposed, "what", strings.Join(ch.What, ","), "pinned_sha256", ch.Pinned, "listed_sha256", ch.Listed, "policy", ch.Policy)
	}
	return c.m.cat.Replace(c.cfg.Name, specs)
}

// compare reads the pins (pinning the listing on a first connection) and
// returns how the listing differs from them, recorded.
func (c *conn) compare(ctx context.Context, listing []listedTool) ([]Change, error) {
	if c.m.pins == nil {
		return nil, nil
	}
	listed := make([]Pin, len(listing))
	for i, l := range listing {
		listed[i] = l.pin
	}
	pins, err := c.m.pins.Pinned(ctx, c.cfg.Name)
	if err != nil {
		return nil, err
	}
	if len(pins) == 0 && len(listed) > 0 {
		if err := c.m.pins.PinFirst(ctx, c.cfg.Name, listed); err != nil {
			return nil, err
		}
		c.log.Info("first connection: pinned every tool's definition", "tools", len(listed))
		return nil, nil
	}
	changes := Compare(pins, listed, c.m.policy)
	if len(changes) > 0 {
		if err := c.m.pins.Changed(ctx, c.cfg.Name, changes); err != nil {
			return nil, err
		}
	}
	return changes, nil
}

// pinned returns the hash of the definition tool's calls may run under
// now, or "" when it is not offered.
func (c *conn) pinned(tool string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offered[tool]
}

// release reads the pins again for a call of a held tool: an admin may
// have accepted its listing meanwhile, from another process.
func (c *conn) release(ctx context.Context, tool string) error {
	if err := c.settle(ctx, false); err != nil {
		return fmt.Errorf("upstream %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	ch, held := c.held[tool]
	_, offered := c.offered[tool]
	c.mu.Unlock()
	switch {
	case held:
		return &HeldError{Server: c.cfg.Name, Change: ch}
	case !offered:
		return fmt.Errorf("tool %s of upstream %s is no longer listed", tool, c.cfg.Name)
	}
	return nil
}

// offeredCount is how many of the upstream's tools are offered.
func (c *conn) offeredCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tools
}

// hasHeld reports whether any tool of the upstream is held.
func (c *conn) hasHeld() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held) > 0
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
		recheck := time.NewTicker(c.m.recheck)
	watch:
		for {
			select {
			case <-life.Done():
				recheck.Stop()
				return
			case <-recheck.C:
				if c.hasHeld() {
					if err := c.settle(life, false); err != nil {
						c.log.Error("reading the pins of held tools failed", "err", err)
					}
				}
			case <-c.relist:
				ctx, cancel := context.WithTimeout(life, c.cfg.ConnectTimeout)
				if err := c.list(ctx, session); err != nil {
					c.log.Error("re-listing tools after list_changed failed", "err", err)
				} else {
					c.log.Info("upstream tools changed", "tools", c.offeredCount())
				}
				cancel()
			case err := <-closed:
				if err == nil {
					err = errors.New("connection closed")
				}
				c.log.Error("upstream went away; reconnecting", "err", err)
				session.Close()
				c.setDown(err)
				recheck.Stop()
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

// withHeaders adds the configured headers to every request to an upstream,
// and sends nothing to any other origin: the headers are the upstream's
// credentials, and an upstream could otherwise hand them to another host by
// a redirect or, over SSE, by naming another host as its message endpoint.
type withHeaders struct {
	upstream string // its name, for errors
	origin   string // scheme://host:port of the configured URL
	headers  http.Header
	next     http.RoundTripper
}

func newWithHeaders(upstream, rawURL string, headers http.Header, next http.RoundTripper) (*withHeaders, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: url: %w", upstream, err)
	}
	return &withHeaders{upstream: upstream, origin: origin(u), headers: headers, next: next}, nil
}

// origin is u's scheme, host and port, the port made explicit, so that
// http://h and http://h:80 are one origin and https://h another.
func origin(u *url.URL) string {
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// crossOriginError refuses a request to another origin than the upstream's.
func (t *withHeaders) crossOriginError(how string, u *url.URL) error {
	return fmt.Errorf("upstream %s: refusing %s %s: it is not the upstream's origin %s, and the upstream's configured headers are never sent elsewhere", t.upstream, how, origin(u), t.origin)
}

// checkRedirect lets a redirect within the upstream's origin through, and
// refuses one to another origin, naming it.
func (t *withHeaders) checkRedirect(r *http.Request, via []*http.Request) error {
	if origin(r.URL) != t.origin {
		return t.crossOriginError("the redirect to", r.URL)
	}
	if len(via) >= 10 {
		return fmt.Errorf("upstream %s: stopped after 10 redirects", t.upstream)
	}
	return nil
}

func (t *withHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	if origin(r.URL) != t.origin {
		return nil, t.crossOriginError("a request to", r.URL)
	}
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
