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
//
// The files: upstream.go the [Manager]; conn.go one upstream's connection,
// kept alive; listing.go its tool list against the pins, into the catalog;
// spec.go and pin.go a listed tool as a catalog spec and as a pin; call.go
// one tools/call; headers.go the configured headers, kept to the
// upstream's origin; stderr.go a stdio upstream's stderr, logged;
// reload.go upstreams added, changed and removed by a reload.
//
// # Two MCP libraries, and why
//
// Countersign serves MCP with mcp-go; here, and only here in production
// code, it is a client of other MCP servers with the official go-sdk.
// mcp-go's client (v1.2.1) was tried for this package and fails two things
// a gateway cannot do without, each shown by a test that fails once
// mcp-go's client no longer does (then try the port again):
//
//   - It does not keep a listed tool's schemas whole. It decodes each
//     inputSchema into its ToolInputSchema, which keeps type, properties,
//     required, $defs and additionalProperties and drops every other
//     top-level keyword: the reference filesystem server's "$schema", and
//     any oneOf, anyOf, allOf, not or description; it also moves draft-07
//     definitions to $defs, rewriting their $refs. Agents would be offered
//     other schemas than the upstream's, and every pinned definition would
//     hash differently, so an upgrade would hold every pinned tool until an
//     admin accepted it again (TestUpstreamSchemasReachAgentsWhole).
//   - It cannot use a go-sdk server over Streamable HTTP in that server's
//     default, stateful mode. Such a server answers server/discover listing
//     only versions before 2026-07-28; the go-sdk client then falls back to
//     the initialize handshake, while mcp-go's client goes on at 2026-07-28
//     and the server refuses its every request
//     (TestMCPGoClientCannotListAStatefulGoSDKServer).
//
// Working around both would mean reading tools/list below mcp-go's client,
// at its transport, and choosing the protocol version by hand per
// upstream. Its transports would also need wrapping for what the
// reconnecting here relies on: the stdio transport says nothing when its
// process exits, nor the Streamable HTTP transport when its connection is
// lost (the go-sdk's ClientSession.Wait says both).
//
// What keeping two libraries costs, as BenchmarkUpstreamCall measured it
// (mcp-go v1.2.1, go-sdk v1.8.0; read_note on the Go test upstream, which
// answers at once): each result goes from the go-sdk's type to mcp-go's
// through its JSON form (call.go), so that nothing of it is lost or
// reinterpreted, about 100 allocations and 5 KB a call; and mcp-go's
// client is quicker, a call through it taking about 0.75 of the gateway's
// time over Streamable HTTP and 0.55 over stdio, where the go-sdk client
// allocates 140 KB a call and mcp-go's 11 KB. That is a few hundred
// microseconds a call, which correct schemas and pins outweigh.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
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
	getenv  func(string) string
	pins    Pins
	policy  atomic.Pointer[func(exposed string) bool] // a reload swaps it (reload.go)
	recheck time.Duration
	life    context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup // the keeping of each upstream
	// draining is the upstreams a reload retired whose calls under way
	// have not all answered.
	draining sync.WaitGroup

	mu    sync.Mutex
	conns []*conn // in the configuration's order
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
	m := &Manager{cat: cat, log: opts.Logger, version: opts.Version, getenv: opts.Getenv, life: life, stop: stop,
		pins: opts.Pins, recheck: opts.RecheckHeld}
	m.policy.Store(&opts.Policy)
	for _, u := range ups {
		m.conns = append(m.conns, m.newConn(u))
	}
	errs := each(m.conns, func(c *conn) error {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		defer cancel()
		return c.connect(cctx)
	})
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
		m.keep(c)
	}
	return m, nil
}

func (m *Manager) newConn(u config.Upstream) *conn {
	if u.CallTimeout <= 0 {
		u.CallTimeout = config.DefaultUpstreamCallTimeout
	}
	return &conn{cfg: u, m: m, getenv: m.getenv, log: m.log.With("upstream", u.Name), relist: make(chan struct{}, 1)}
}

// keep keeps c connected until the Manager closes or a reload retires it.
func (m *Manager) keep(c *conn) {
	life, stop := context.WithCancel(m.life)
	c.stop = stop
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c.keep(life)
	}()
}

// each runs f on every conn at once and returns their errors, in order.
func each(conns []*conn, f func(*conn) error) []error {
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(c)
		}()
	}
	wg.Wait()
	return errs
}

// Close disconnects every upstream, those a reload retired among them,
// and stops their processes.
func (m *Manager) Close() error {
	m.stop()
	m.mu.Lock()
	conns := m.conns
	m.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	m.wg.Wait()
	m.draining.Wait()
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
	m.mu.Lock()
	conns := m.conns
	m.mu.Unlock()
	out := make([]Status, 0, len(conns))
	for _, c := range conns {
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

// Listed returns the tools server listed last, as pins, and whether
// server is one of the manager's upstreams.
func (m *Manager) Listed(server string) ([]Pin, bool) {
	m.mu.Lock()
	conns := m.conns
	m.mu.Unlock()
	for _, c := range conns {
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
