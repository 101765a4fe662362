package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/metrics"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/server"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/pinstore"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the guarded tools to agents (stdio by default) and the approver page",
		Long: `Serve exposes the configured tools over MCP. By default it speaks MCP on stdin
and stdout, for an agent that starts countersign as a subprocess; stdout then
carries nothing but MCP messages and all logs go to stderr.

With --http ADDR it serves agents over HTTP instead: Streamable HTTP at /mcp and
SSE at /sse (messages to /message), on one listener.

Either way the approver page listens on approval.listen (127.0.0.1:8710 by
default) and its URL is printed on stderr at start.

Both listeners also answer /healthz (the process is up), /readyz (the
database takes a write, the audit log passed its check at start, every
upstream is connected, no witness refuses the log; 503 and why, otherwise;
each witness's lag is reported; WARN lines, which keep it ready, name upstream
tools held since their listing changed and policies that name no tool) and
/metrics (Prometheus).

Each upstream's tools are pinned on its first connection; a tool whose later
listing differs is held until an admin accepts it (countersign upstreams).

With audit.witness_file or audit.witnesses, a log that does not extend the
checkpoint a witness holds (a database restored from an older copy) is
refused at start, naming both tree sizes; --accept-rollback serves it and
records that in the log.

The configuration is checked as config validate checks it before anything
is created; the data directory is then made (mode 0700) if needed, and with
the embedded default the demo files it names are written into it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if addr, _ := cmd.Flags().GetString("http"); addr != "" {
				c.HTTP.Addr = addr
			}
			c.Audit.AcceptRollback, _ = cmd.Flags().GetBool("accept-rollback")
			log, err := newLogger(cmd, c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, c, log)
		},
	}
	cmd.Flags().String("http", "", "serve agents over HTTP on ADDR (e.g. 127.0.0.1:8711) instead of stdio")
	cmd.Flags().Bool("accept-rollback", false, "serve although the audit log does not extend the checkpoint in audit.witness_file or held by an audit.witnesses witness (recorded in the log)")
	return cmd
}

// stack is every part of a running Countersign, wired together.
type stack struct {
	cfg       *config.Config
	db        *sql.DB
	dbProbe   *dbProbe
	metrics   *metrics.Metrics
	audit     *audit.Log
	tools     *tools.Catalog
	approvals *approval.Service
	pageOpts  page.Options // the approver page's, from the same config as the approvals'
	notifier  *notify.Notifier
	tokens    *token.Signer
	amounts   *store.Amounts // what counted calls moved (guard.Options.Amounts)
	guard     *guard.Guard
	upstreams *upstream.Manager
	server    *server.Server
	witness   *witness.File
	remotes   []*witness.Remote // audit.witnesses
	stopKeep  func()            // stops the witness loops and waits for them
}

// assemble opens the data directory and wires the packages: the one place
// that knows how they fit together.
func assemble(ctx context.Context, c *config.Config, log *slog.Logger) (_ *stack, err error) {
	policy, err := compilePolicy(c, log.With("component", "authz"))
	if err != nil {
		return nil, err
	}
	s := &stack{cfg: c}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.db, s.audit, err = openAudit(ctx, c, audit.Options{CheckpointEvery: c.Audit.CheckpointEvery, Logger: log.With("component", "audit")})
	if err != nil {
		return nil, err
	}
	// Before anything is appended: a database restored from an older
	// copy is refused (package witness).
	if c.Audit.WitnessFile != "" || len(c.Audit.Witnesses) > 0 {
		if err := s.startWitness(ctx, c, log); err != nil {
			return nil, err
		}
	}
	if err = logPolicy(ctx, s.audit, c); err != nil {
		return nil, err
	}
	s.dbProbe = &dbProbe{db: s.db}
	if s.tools, err = tools.New(ctx, c, s.db); err != nil {
		return nil, err
	}
	crashHooks(s.tools)
	// Metrics see what the audit log accepts and how long the policy
	// takes, through the interfaces guard and approval already take.
	s.metrics = metrics.New(metrics.Options{
		Pending: func(ctx context.Context) (int, error) {
			if s.approvals == nil {
				return 0, nil
			}
			return s.approvals.PendingCount(ctx)
		},
		KnownTool: func(name string) bool { _, ok := s.tools.Lookup(name); return ok },
		Witnesses: s.witnessMetrics(),
		Version:   buildVersion(),
		Logger:    log.With("component", "metrics"),
	})
	recorder := s.metrics.Recorder(s.audit)
	aopts := approvalOptions(c)
	aopts.Logger = log.With("component", "approval")
	if len(c.Approval.AttestationRoots) > 0 {
		if aopts.AttestationRoots, err = attest.LoadRoots(c.Approval.AttestationRoots); err != nil {
			return nil, configError(fmt.Errorf("%s: approval.attestation_roots: %w", c.Source, err))
		}
	}
	if aopts.ResultKey, err = resultKey(c); err != nil {
		return nil, err
	}
	s.notifier, aopts.Notify = notifier(c, recorder, s.metrics, log.With("component", "notify"))
	if s.approvals, err = approval.New(ctx, s.db, recorder, aopts); err != nil {
		return nil, err
	}
	s.pageOpts = pageOptions(c, aopts.Logger)
	if len(c.Upstreams) > 0 {
		pins, err := pinstore.Open(ctx, s.db, recorder)
		if err != nil {
			return nil, err
		}
		s.upstreams, err = upstream.Start(ctx, c.Upstreams, s.tools, upstream.Options{
			Logger: log.With("component", "upstream"), Version: buildVersion(),
			Pins: pins, Policy: func(name string) bool { _, ok := c.Tools[name]; return ok },
		})
		if err != nil {
			return nil, err
		}
		allUp := true
		for _, st := range s.upstreams.Status() {
			allUp = allUp && st.Up
		}
		if allUp {
			for _, err := range unknownUpstreamTools(c, s.tools) {
				log.Warn("policy for a tool no upstream offers; check the name", "err", err)
			}
		}
	}
	if s.tokens, err = tokenSigner(c); err != nil {
		return nil, err
	}
	if s.amounts, err = store.OpenAmounts(ctx, s.db); err != nil {
		return nil, err
	}
	s.guard = guard.New(guard.Options{
		Catalog: s.tools, Policy: s.metrics.Policy(policy), Audit: recorder,
		Requests: s.approvals, Runs: s.approvals, Recovery: s.approvals, Tasks: s.approvals, Grants: s.approvals,
		Evidence: s.approvals, Tokens: s.tokens,
		History: s.audit, Marks: store.Marks{DB: s.db}, Amounts: s.amounts,
		Tools: c.Tools, Logger: log.With("component", "guard"), Freezes: s.approvals,
		MaxArgBytes: c.Limits.MaxArgBytes, MaxArgDepth: c.Limits.MaxArgDepth,
		Limits: guard.Limits{PendingPerAgent: c.Limits.PendingPerAgent, PendingTotal: c.Limits.PendingTotal,
			CallsPerSecond: float64(c.Limits.CallsPerSecond), CallBurst: c.Limits.CallBurst},
	})
	if _, ok := c.Tools["approval_status"]; ok {
		if err := s.tools.Replace("guard", []*tools.Spec{s.guard.StatusSpec()}); err != nil {
			return nil, err
		}
	}
	// Before anything is served: what the previous process left unfinished
	// is cancelled, recorded or resumed (see package guard); the usage
	// windows then count what that recorded too.
	if err := s.guard.Resume(ctx); err != nil {
		return nil, fmt.Errorf("settling what the previous run left unfinished: %w", err)
	}
	recent, err := recentEntries(ctx, s.audit, time.Now().Add(-24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("reading the last day of the audit log for usage windows: %w", err)
	}
	if err := s.guard.RestoreUsage(ctx, recent); err != nil {
		return nil, fmt.Errorf("rebuilding the usage windows: %w", err)
	}
	routes, err := cibaRoutes(ctx, c, s.guard, s.tokens, recent, log.With("component", "ciba"))
	if err != nil {
		return nil, err
	}
	s.server, err = server.New(server.Options{
		Config: c, Catalog: s.tools, Guard: s.guard, Version: buildVersion(), Logger: log.With("component", "server"),
		Routes: routes,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// startWitness refuses a log that does not extend the witnessed
// checkpoints: the file witness's, the one each C2SP witness cosigned last
// (kept in the database) and the tree each C2SP witness holds (asked by
// submitting the current checkpoint). With --accept-rollback the loss is
// recorded, once per witness that saw it, and the server serves. Then it
// keeps every witness up to date while the server runs.
//
// A C2SP witness that cannot be reached at start does not stop the server
// (it would make the witness a single point of failure for every restart):
// the refusal is logged, /readyz names it, and the first answer that shows
// a rollback is logged and fails /readyz.
func (s *stack) startWitness(ctx context.Context, c *config.Config, log *slog.Logger) error {
	_, v, err := audit.ParsePublicKey(s.audit.PublicKey())
	if err != nil {
		return err
	}
	var rollbacks []*witness.RollbackError
	check := func(err error) error {
		var rb *witness.RollbackError
		if errors.As(err, &rb) {
			rollbacks = append(rollbacks, rb)
			return nil
		}
		return err
	}
	if c.Audit.WitnessFile != "" {
		s.witness = &witness.File{Path: c.Audit.WitnessFile, Verifier: v}
		if err := check(s.witness.Check(ctx, s.audit)); err != nil {
			return err
		}
	}
	for i, wc := range c.Audit.Witnesses {
		r, err := witness.NewRemote(wc.URL, wc.Key, s.audit, log.With("component", "witness"))
		if err != nil {
			return configError(fmt.Errorf("%s: audit.witnesses[%d]: %w", c.Source, i, err))
		}
		s.remotes = append(s.remotes, r)
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = check(r.Check(cctx))
		cancel()
		if err != nil {
			log.Error("cannot check the audit log against its witness; serving without its word, /readyz says so until it answers",
				"witness", r.Name(), "url", wc.URL, "err", err)
		}
	}
	if len(rollbacks) > 0 && !c.Audit.AcceptRollback {
		errs := make([]error, len(rollbacks))
		for i, rb := range rollbacks {
			errs[i] = rb
		}
		return errors.Join(errs...)
	}
	for _, rb := range rollbacks {
		log.Warn("serving a rolled-back audit log, as --accept-rollback asks", "witness", rb.Path, "witnessed_size", rb.Witnessed, "log_size", rb.Log)
		if _, err := s.audit.Append(ctx, audit.Entry{Kind: vocab.KindRollbackAccepted, Reason: rb.Error()}); err != nil {
			return fmt.Errorf("recording the accepted rollback: %w", err)
		}
	}
	if s.witness != nil {
		// Witness the log as it is now: after an accepted rollback the
		// file follows the new history; on a first start it protects
		// from now on.
		msg, err := s.audit.Checkpoint(ctx)
		if err == nil {
			err = s.witness.Record(msg, len(rollbacks) > 0)
		}
		if err != nil {
			return err
		}
	}
	for _, r := range s.remotes {
		if st := r.Status(); st.Refused() {
			// A witness never forgets a tree it cosigned: it refuses this
			// log for good. /readyz fails until it is replaced.
			log.Error("this witness refuses the audit log; remove it from audit.witnesses or register the log with a fresh witness",
				"witness", r.Name(), "err", st.Err)
		}
	}
	every := c.Audit.CheckpointEvery
	if every <= 0 {
		every = time.Minute
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if s.witness != nil {
		wg.Go(func() {
			s.witness.Keep(kctx, s.audit, every, func(err error) {
				log.Error("cannot update the audit witness; rollbacks are not caught until it works again", "file", c.Audit.WitnessFile, "err", err)
			})
		})
	}
	for _, r := range s.remotes {
		// Retries back off up to the checkpoint interval, at most a
		// minute: a witness back up is caught up within that.
		wg.Go(func() { r.Keep(kctx, every, min(every, time.Minute)) })
	}
	s.stopKeep = func() { cancel(); wg.Wait() }
	return nil
}

// witnessMetrics reports the C2SP witnesses' progress to the metrics.
func (s *stack) witnessMetrics() func() []metrics.WitnessStatus {
	if len(s.remotes) == 0 {
		return nil
	}
	return func() []metrics.WitnessStatus {
		now := time.Now()
		var out []metrics.WitnessStatus
		for _, r := range s.remotes {
			st := r.Status()
			out = append(out, metrics.WitnessStatus{Name: st.Name, Cosigned: st.Cosigned, Behind: st.Behind(), Lag: st.Lag(now), Refused: st.Refused()})
		}
		return out
	}
}

// openAudit opens the data directory's database and audit log. A log that
// fails its startup check comes back with its *audit.TamperError: it can
// still be read and exported, but it refuses every append.
func openAudit(ctx context.Context, c *config.Config, opts audit.Options) (*sql.DB, *audit.Log, error) {
	if err := prepareDataDir(c, opts.Logger); err != nil {
		return nil, nil, err
	}
	db, err := store.Open(ctx, filepath.Join(c.Server.DataDir, store.FileName), store.WithSync(c.Audit.Sync))
	if err != nil {
		return nil, nil, err
	}
	key, err := audit.LoadOrCreateKey(c.Server.DataDir)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	log, err := audit.Open(ctx, db, key, opts)
	if log == nil {
		db.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	if err != nil {
		return db, log, fmt.Errorf("audit log: %w", err)
	}
	return db, log, nil
}

// prepareDataDir creates the data directory (0700) of a validated
// configuration and, for the embedded default, writes the demo files it
// names there if they are missing: the one place anything is written
// before the database opens. log (nil: none) hears of each file written.
func prepareDataDir(c *config.Config, log *slog.Logger) error {
	if err := c.EnsureDataDir(); err != nil {
		return err
	}
	if c.Source != config.Embedded {
		return nil
	}
	created, err := countersign.InstallDemo(c.Dir)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range created {
		log.Info("wrote demo file", "path", p)
	}
	return err
}

// close stops background work first, then the log (which writes a final
// checkpoint), then the database.
func (s *stack) close() error {
	var errs []error
	if s.server != nil {
		s.server.Close()
	}
	if s.guard != nil {
		s.guard.Close()
	}
	if s.upstreams != nil {
		errs = append(errs, s.upstreams.Close())
	}
	if s.approvals != nil {
		errs = append(errs, s.approvals.Close())
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if s.tools != nil {
		errs = append(errs, s.tools.Close())
	}
	if s.stopKeep != nil {
		s.stopKeep()
	}
	if s.audit != nil {
		errs = append(errs, s.audit.Close())
	}
	if s.witness != nil && s.audit.Err() == nil {
		// Close wrote the final checkpoint; the witness keeps it.
		msg, err := s.audit.Checkpoint(context.Background())
		if err == nil {
			err = s.witness.Record(msg, false)
		}
		errs = append(errs, err)
	}
	if len(s.remotes) > 0 && s.audit.Err() == nil {
		// The C2SP witnesses get the final checkpoint too, if they
		// answer soon: shutting down must not wait on the network, and
		// the next start sends it anyway.
		if msg, err := s.audit.Checkpoint(context.Background()); err == nil {
			for _, r := range s.remotes {
				if r.Status().Refused() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r.Submit(ctx, msg)
				cancel()
			}
		}
	}
	if s.amounts != nil {
		errs = append(errs, s.amounts.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}

// serve runs Countersign until ctx ends.
func serve(ctx context.Context, c *config.Config, log *slog.Logger) (err error) {
	if c.HTTP.Addr != "" && len(c.HTTP.Agents) == 0 && !loopback(c.HTTP.Addr) {
		return configError(fmt.Errorf("%s: http.agents: an HTTP listener on %s (not loopback) needs at least one agent token: run countersign agents add NAME", c.Source, c.HTTP.Addr))
	}
	// One server per data directory, before anything is written there (the
	// database, the keys, the demo files): a second would keep usage
	// windows and caps of its own beside the first's.
	lock, err := lockDataDir(c)
	if err != nil {
		return err
	}
	defer lock.Close()
	// The page listens before anything is assembled: on port 0 its real
	// port is known only now, and the links and origins derived from
	// listen must carry it.
	page, err := listen(c.Approval.Listen)
	if err != nil {
		return fmt.Errorf("approver page: approval.listen %s: %w", c.Approval.Listen, err)
	}
	defer page.Close()
	if host, port, _ := net.SplitHostPort(c.Approval.Listen); port == "0" && c.Approval.Derived() {
		bound := net.JoinHostPort(host, strconv.Itoa(page.Addr().(*net.TCPAddr).Port))
		if err := c.Approval.Derive(bound); err != nil {
			return configError(fmt.Errorf("%s: approval.public_url: %w", c.Source, err))
		}
	}
	// The agent listener opens first: its address is the default issuer of
	// approval tokens.
	var agentLn net.Listener
	if c.HTTP.Addr != "" {
		if agentLn, err = listen(c.HTTP.Addr); err != nil {
			return fmt.Errorf("agent listener: %w", err)
		}
		defer agentLn.Close()
		c.HTTP.Addr = agentLn.Addr().String()
		if c.HTTP.Issuer == "" && !loopback(c.HTTP.Addr) {
			log.Warn("approval tokens name the agent listener by its address; set http.issuer to the URL clients use", "issuer", issuer(c))
		}
	}
	if err := lock.Listening(page.Addr(), agentLn); err != nil {
		return err
	}
	s, err := assemble(ctx, c, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.close()) }()
	srv := s.server

	pageSrv := newHTTPServer(s.pageHandler(), log)
	go func() {
		var err error
		if c.Approval.TLSCertFile != "" {
			err = pageSrv.ServeTLS(page, c.Approval.TLSCertFile, c.Approval.TLSKeyFile)
		} else {
			err = pageSrv.Serve(page)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("approver page stopped", "err", err)
		}
	}()
	defer shutdown(pageSrv, c.Server.ShutdownTimeout)
	log.Info("approver page", "url", c.Approval.PublicURL, "listen", page.Addr().String())
	log.Info("countersign started", "version", buildVersion(), "config", c.Source,
		"data_dir", c.Server.DataDir, "tools", len(s.tools.Specs()))

	if c.HTTP.Addr == "" {
		// The transport's context is not the signal's: on SIGTERM the guard
		// ends the calls first, and their agents hear why, before stdio
		// stops.
		stdioCtx, stopStdio := context.WithCancel(context.WithoutCancel(ctx))
		defer stopStdio()
		errc := make(chan error, 1)
		go func() { errc <- srv.ServeStdio(stdioCtx, os.Stdin, os.Stdout) }()
		log.Info("serving MCP on stdio")
		select {
		case err := <-errc:
			// The agent closed stdin: its calls went with it.
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			log.Info("shutting down: stdin closed")
			drain(s.guard, c.Server.ShutdownTimeout, log)
			return nil
		case <-ctx.Done():
		}
		log.Info("shutting down")
		drain(s.guard, c.Server.ShutdownTimeout, log)
		stopStdio()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}

	ln := agentLn
	base := "http://" + ln.Addr().String()
	handler, closeSessions := s.agentHandler(base)
	agentSrv := newHTTPServer(handler, log)
	errc := make(chan error, 1)
	go func() { errc <- agentSrv.Serve(ln) }()
	log.Info("serving MCP over HTTP", "streamable", base+"/mcp", "sse", base+"/sse")
	_, cibaOn := c.Tools[ciba.Tool]
	log.Info("serving CIBA", "enabled", cibaOn, "backchannel", issuer(c)+ciba.PathAuthorize,
		"token", issuer(c)+ciba.PathToken, "jwks", issuer(c)+ciba.PathJWKS)
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
func (s *stack) pageHandler() http.Handler {
	return s.withOps(s.metrics.ApproverPage(page.Handler(s.approvals, s.pageOpts)), approverHosts(s.cfg.Approval.AllowedHosts))
}

// agentHandler is the agent listener of serve --http: MCP, and the
// operations endpoints.
func (s *stack) agentHandler(base string) (http.Handler, func(context.Context) error) {
	h, closeSessions := s.server.HTTPHandler(base)
	allow := func(string) bool { return true }
	if hosts := s.cfg.HTTP.AllowedHosts; len(hosts) > 0 {
		allow = agentHosts(hosts)
	}
	return s.withOps(h, allow), closeSessions
}

func approvalOptions(c *config.Config) approval.Options {
	var approvers []approval.Approver
	for _, a := range c.Approvers {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	return approval.Options{
		RPID: c.Approval.RPID, RPName: c.Approval.RPName, Origins: c.Approval.Origins,
		PublicURL: c.Approval.PublicURL,
		Approvers: approvers, PollInterval: c.Approval.PollInterval,
		EnrollTTL: c.Approval.EnrollTTL, MaxBatch: c.Approval.MaxBatch,
		Attestation: c.Approval.Attestation,
		ResultTTL:   c.Approval.ResultTTL,
	}
}

// pageOptions are the approver page's options, from the same approval
// section as approvalOptions: both check a visitor's origin.
func pageOptions(c *config.Config, log *slog.Logger) page.Options {
	return page.Options{
		Origins: c.Approval.Origins, PublicURL: c.Approval.PublicURL, AllowedHosts: c.Approval.AllowedHosts,
		MaxBodyBytes: c.Approval.MaxBodyBytes, RequireSignIn: c.Approval.Remote(), Logger: log,
	}
}

// resultKey is the key approved calls' results are sealed with while they
// wait for their agent, derived from the server key in the data directory
// (approval/results.go says why there).
func resultKey(c *config.Config) ([]byte, error) {
	serverKey, err := audit.LoadOrCreateKey(c.Server.DataDir)
	if err != nil {
		return nil, err
	}
	return approval.DeriveResultKey(serverKey)
}

func listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}

// newHTTPServer sets the timeouts that are safe. Read and write timeouts stay
// zero: a connection deadline would cut SSE streams and calls waiting for a
// human, which are long-lived by design; bodies are bounded by size instead.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
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

func loopback(addr string) bool {
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

// recentEntries reads the audit log's entries from since on, oldest first.
// The log is in time order, so the first of them is found by halving.
func recentEntries(ctx context.Context, log *audit.Log, since time.Time) ([]audit.Entry, error) {
	last, err := log.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	lo, hi := int64(0), last // the answer is in (lo, hi+1]
	cutoff := since.UTC().Format(audit.TimeFormat)
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := log.Since(ctx, mid, 1)
		if err != nil {
			return nil, err
		}
		if len(e) == 0 || e[0].Time >= cutoff {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	var out []audit.Entry
	for seq := lo; ; {
		batch, err := log.Since(ctx, seq, 1000)
		if err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			return out, nil
		}
		out = append(out, batch...)
		seq = batch[len(batch)-1].Seq
	}
}
