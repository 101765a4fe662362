package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
)

// Serve runs Countersign until ctx ends: [Open], then [Daemon.Run].
func Serve(ctx context.Context, c *config.Config, opts Options) error {
	d, err := Open(ctx, c, opts)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// Daemon is a Countersign that holds its data directory and its
// listeners, assembled and about to serve.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	lock  *dataLock
	ln    *listeners
	stack *Stack
}

// Open locks the data directory, opens the listeners (writing their bound
// addresses back into c) and assembles the stack. Nothing is served until
// [Daemon.Run].
func Open(ctx context.Context, c *config.Config, opts Options) (_ *Daemon, err error) {
	d := &Daemon{opts: opts, log: opts.logger()}
	if c.HTTP.Addr != "" && len(c.HTTP.Agents) == 0 && !c.HTTP.OAuth.Enabled() && !Loopback(c.HTTP.Addr) {
		return nil, &ConfigError{fmt.Errorf("%s: http.agents: an HTTP listener on %s (not loopback) needs at least one agent token: run countersign agents add NAME", c.Source, c.HTTP.Addr)}
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	// One server per data directory, before anything is written there (the
	// database, the keys, the demo files): a second would keep usage
	// windows and caps of its own beside the first's.
	if d.lock, err = lockDataDir(c); err != nil {
		return nil, err
	}
	httpAddr := c.HTTP.Addr // as the file says it, for reloads
	if d.ln, err = openListeners(c, d.log); err != nil {
		return nil, err
	}
	if err := d.lock.Listening(d.ln.page.Addr(), d.ln.agents); err != nil {
		return nil, err
	}
	if d.stack, err = Assemble(ctx, c, opts); err != nil {
		return nil, err
	}
	d.stack.reloads.httpAddr, d.stack.reloads.pageAddr = httpAddr, d.ln.page.Addr().String()
	return d, nil
}

// PageAddr is the approver page's bound address.
func (d *Daemon) PageAddr() net.Addr { return d.ln.page.Addr() }

// AgentAddr is the agent listener's bound address; nil when agents are
// served on stdio.
func (d *Daemon) AgentAddr() net.Addr {
	if d.ln.agents == nil {
		return nil
	}
	return d.ln.agents.Addr()
}

// Stack is the assembled Countersign the daemon serves.
func (d *Daemon) Stack() *Stack { return d.stack }

// Run serves the approver page and the agents (over stdio, or HTTP when
// http.addr is set) until ctx ends or the stdio agent leaves; then it
// drains the calls, closes the transports, the stack, the listeners and
// the lock, in that order.
//
// A replica fenced by its peers (replica.go) stops the same way, and Run
// returns why.
func (d *Daemon) Run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, d.close()) }()
	s, c, log := d.stack, d.stack.cfg, d.log
	ctx, stop := context.WithCancel(ctx)
	fatal := make(chan error, 1)
	go func() {
		select {
		case err := <-s.fatal:
			stop()
			fatal <- err
		case <-ctx.Done():
			fatal <- nil
		}
	}()
	defer func() {
		stop()
		err = errors.Join(<-fatal, err)
	}()
	pageSrv := s.servePage(d.ln.page, log)
	defer shutdown(pageSrv, c.Server.ShutdownTimeout)
	s.logShortQuorums(ctx, log)
	log.Info("approver page", "url", c.Approval.PublicURL, "listen", d.ln.page.Addr().String())
	log.Info("countersign started", "version", d.opts.Version, "config", c.Source,
		"data_dir", c.Server.DataDir, "tools", len(s.tools.Specs()))
	stopReloads := d.reloadOnSignal(ctx)
	defer stopReloads()
	if d.ln.agents == nil {
		return s.serveStdio(ctx, d.opts, log)
	}
	return s.serveHTTP(ctx, d.ln.agents, log)
}

// close releases what Open took, the last taken first.
func (d *Daemon) close() error {
	var err error
	if d.stack != nil {
		err = d.stack.Close()
	}
	if d.ln != nil {
		d.ln.close()
	}
	if d.lock != nil {
		d.lock.Close()
	}
	return err
}

// listeners are the approver page's and, serving HTTP, the agents'.
type listeners struct {
	page, agents net.Listener
}

func (l *listeners) close() {
	if l.page != nil {
		l.page.Close()
	}
	if l.agents != nil {
		l.agents.Close()
	}
}

// openListeners listens before anything is assembled: on port 0 the real
// port is known only now, and the links, origins and issuer derived from
// the addresses must carry it. It writes the bound addresses back into c.
func openListeners(c *config.Config, log *slog.Logger) (_ *listeners, err error) {
	l := &listeners{}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.page, err = listen(c.Approval.Listen); err != nil {
		return nil, fmt.Errorf("approver page: approval.listen %s: %w", c.Approval.Listen, err)
	}
	if host, port, _ := net.SplitHostPort(c.Approval.Listen); port == "0" && c.Approval.Derived() {
		bound := net.JoinHostPort(host, strconv.Itoa(l.page.Addr().(*net.TCPAddr).Port))
		if err := c.Approval.Derive(bound); err != nil {
			return nil, &ConfigError{fmt.Errorf("%s: approval.public_url: %w", c.Source, err)}
		}
	}
	// The agent listener opens before assembly: its address is the
	// default issuer of approval tokens.
	if c.HTTP.Addr != "" {
		if l.agents, err = listen(c.HTTP.Addr); err != nil {
			return nil, fmt.Errorf("agent listener: %w", err)
		}
		c.HTTP.Addr = l.agents.Addr().String()
		if c.HTTP.Issuer == "" && !Loopback(c.HTTP.Addr) {
			log.Warn("approval tokens name the agent listener by its address; set http.issuer to the URL clients use", "issuer", Issuer(c))
		}
	}
	return l, nil
}

// servePage serves the approver page on ln until the returned server is
// shut down.
func (s *Stack) servePage(ln net.Listener, log *slog.Logger) *http.Server {
	c := s.cfg
	srv := NewHTTPServer(s.pageHandler(), log)
	go func() {
		var err error
		if c.Approval.TLSCertFile != "" {
			err = srv.ServeTLS(ln, c.Approval.TLSCertFile, c.Approval.TLSKeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("approver page stopped", "err", err)
		}
	}()
	return srv
}

// serveStdio serves one agent on stdin and stdout until ctx ends or the
// agent closes stdin.
func (s *Stack) serveStdio(ctx context.Context, opts Options, log *slog.Logger) error {
	timeout := s.cfg.Server.ShutdownTimeout
	// The transport's context is not the signal's: on SIGTERM the guard
	// ends the calls first, and their agents hear why, before stdio
	// stops.
	stdioCtx, stopStdio := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStdio()
	stdin, stdout := opts.stdio()
	errc := make(chan error, 1)
	go func() { errc <- s.server.ServeStdio(stdioCtx, stdin, stdout) }()
	log.Info("serving MCP on stdio")
	select {
	case err := <-errc:
		// The agent closed stdin: its calls went with it.
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		log.Info("shutting down: stdin closed")
		drain(s.guard, timeout, log)
		return nil
	case <-ctx.Done():
	}
	log.Info("shutting down")
	drain(s.guard, timeout, log)
	stopStdio()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// serveHTTP serves agents on ln (Streamable HTTP, SSE and CIBA) until ctx
// ends, then drains the calls, closes the sessions and the listener.
func (s *Stack) serveHTTP(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	c := s.cfg
	base := "http://" + ln.Addr().String()
	handler, closeSessions := s.AgentHandler(base)
	agentSrv := NewHTTPServer(handler, log)
	errc := make(chan error, 1)
	go func() { errc <- agentSrv.Serve(ln) }()
	log.Info("serving MCP over HTTP", "streamable", base+"/mcp", "sse", base+"/sse", "agents", agentAuth(c))
	_, cibaOn := c.Tools[ciba.Tool]
	log.Info("serving CIBA", "enabled", cibaOn, "backchannel", Issuer(c)+ciba.PathAuthorize,
		"token", Issuer(c)+ciba.PathToken, "jwks", Issuer(c)+ciba.PathJWKS)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	log.Info("shutting down")
	drain(s.guard, c.Server.ShutdownTimeout, log)
	sctx, cancel := context.WithTimeout(context.Background(), c.Server.ShutdownTimeout)
	defer cancel()
	closeSessions(sctx)
	shutdown(agentSrv, c.Server.ShutdownTimeout)
	return nil
}

// drain lets the guard end its calls within the shutdown timeout (see
// guard.Shutdown) while the transports still carry their answers.
func drain(g *guard.Guard, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		log.Warn("calls still running at shutdown; the next start settles them", "err", err)
	}
}

// pageHandler is the approver listener: the page, and the operations
// endpoints.
func (s *Stack) pageHandler() http.Handler {
	return s.withOps(s.metrics.ApproverPage(page.Handler(s.approvals, s.pageOpts)), approverHosts(s.cfg.Approval.AllowedHosts))
}

// AgentHandler is the agent listener of serve --http at base: MCP, CIBA
// and the operations endpoints. The function closes the MCP sessions.
func (s *Stack) AgentHandler(base string) (http.Handler, func(context.Context) error) {
	h, closeSessions := s.server.HTTPHandler(base)
	allow := func(string) bool { return true }
	if hosts := s.cfg.HTTP.AllowedHosts; len(hosts) > 0 {
		allow = agentHosts(hosts)
	}
	return s.withOps(h, allow), closeSessions
}

func listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}

// NewHTTPServer sets the timeouts that are safe. Read and write timeouts stay
// zero: a connection deadline would cut SSE streams and calls waiting for a
// human, which are long-lived by design; bodies are bounded by size instead.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func shutdown(s *http.Server, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		s.Close()
	}
}

// Loopback reports whether addr (host:port) is on the loopback interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// agentAuth says, for the start-up line, how callers on the HTTP listener
// are known. With neither http.agents nor http.oauth every caller is
// "anonymous" (allowed on loopback only): the default for a first try, and
// the log is where an operator should learn it, not a comment in mcp.yaml.
func agentAuth(c *config.Config) string {
	n, oauth := len(c.HTTP.Agents), c.HTTP.OAuth.Enabled()
	switch {
	case n == 0 && !oauth:
		return `anonymous: no http.agents or http.oauth, so every caller (loopback only) is agent "anonymous"; countersign agents add NAME gives each agent a token`
	case oauth:
		return fmt.Sprintf("%d bearer tokens (http.agents) and OAuth access tokens of %s", n, c.HTTP.OAuth.Issuer)
	}
	return fmt.Sprintf("%d bearer tokens (http.agents)", n)
}
