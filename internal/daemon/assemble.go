package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/metrics"
	"github.com/countersign/countersign/server"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/pinstore"
)

// Assemble opens the data directory and wires the packages: the one place
// that knows how they fit together. Each step below needs the ones before
// it; on an error, what was opened is closed again.
func Assemble(ctx context.Context, c *config.Config, opts Options) (_ *Stack, err error) {
	log := opts.logger()
	policy, err := CompilePolicy(c, log.With("component", "authz"))
	if err != nil {
		return nil, err
	}
	s := &Stack{cfg: c, version: opts.Version}
	s.reloads.cfg = c
	s.inForce.Store(c)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.openLog(ctx, log); err != nil {
		return nil, err
	}
	if s.tools, err = tools.New(ctx, c, s.db); err != nil {
		return nil, err
	}
	crashHooks(s.tools)
	s.metrics = s.newMetrics(log)
	recorder := s.metrics.Recorder(s.audit)
	if err := s.openApprovals(ctx, recorder, log); err != nil {
		return nil, err
	}
	if err := s.startUpstreams(ctx, recorder, log); err != nil {
		return nil, err
	}
	s.quorums = policy.Quorums()
	if err := s.newGuard(ctx, policy, recorder, log); err != nil {
		return nil, err
	}
	recent, err := s.settle(ctx)
	if err != nil {
		return nil, err
	}
	s.startReaping(log)
	if err := s.newServer(ctx, recent, log); err != nil {
		return nil, err
	}
	return s, nil
}

// openLog opens the database and the audit log, checks the log against
// its witnesses and records the policy it will decide with.
func (s *Stack) openLog(ctx context.Context, log *slog.Logger) (err error) {
	c := s.cfg
	s.owner = uuid.NewString()
	s.db, s.audit, err = OpenAudit(ctx, c, audit.Options{
		CheckpointEvery: c.Audit.CheckpointEvery, CallerCheckpoints: true,
		Owner: s.owner, Logger: log.With("component", "audit"),
	})
	if err != nil {
		return err
	}
	if err := s.holdReplica(ctx, log); err != nil {
		return err
	}
	// Before anything is appended: a database restored from an older
	// copy is refused (package witness).
	if c.Audit.WitnessFile != "" || len(c.Audit.Witnesses) > 0 {
		if err := s.startWitness(ctx, c, log); err != nil {
			return err
		}
	}
	s.lead(ctx, c, log)
	if s.policySum, err = logPolicy(ctx, s.audit, c); err != nil {
		return err
	}
	s.dbProbe = &dbProbe{db: s.db}
	return nil
}

// newMetrics makes the metrics. They see what the audit log accepts and
// how long the policy takes through the interfaces guard and approval
// already take.
func (s *Stack) newMetrics(log *slog.Logger) *metrics.Metrics {
	return metrics.New(metrics.Options{
		Pending: func(ctx context.Context) (int, error) {
			if s.approvals == nil {
				return 0, nil
			}
			return s.approvals.PendingCount(ctx)
		},
		KnownTool: func(name string) bool { _, ok := s.tools.Lookup(name); return ok },
		Witnesses: s.witnessMetrics(),
		ExportLag: s.exportLag(),
		Version:   s.version,
		Logger:    log.With("component", "metrics"),
	})
}

// openApprovals starts the notification channels and the approval
// service.
func (s *Stack) openApprovals(ctx context.Context, recorder metrics.Recorder, log *slog.Logger) (err error) {
	c := s.cfg
	aopts := ApprovalOptions(c)
	aopts.Logger = log.With("component", "approval")
	if len(c.Approval.AttestationRoots) > 0 {
		if aopts.AttestationRoots, err = attest.LoadRoots(c.Approval.AttestationRoots); err != nil {
			return &ConfigError{fmt.Errorf("%s: approval.attestation_roots: %w", c.Source, err)}
		}
	}
	if aopts.ResultKey, err = resultKey(c); err != nil {
		return err
	}
	if s.owners != nil {
		aopts.Owners, aopts.Owner = s.owners, s.owner
	}
	idp, people, err := openIdentity(ctx, c, s.db, aopts.Logger)
	if err != nil {
		return err
	}
	n, f := notifier(c, recorder, s.metrics, people, log.With("component", "notify"))
	s.notifier, aopts.Notify = n, s.notify.observe // a reload swaps the channels (reload.go)
	s.notify.now.Store(&notifyInForce{n: n, f: f})
	s.notify.people = people
	aopts.People = people
	if people != nil {
		s.people = people
		recordSuspensions(people, recorder, func(ctx context.Context, approver, by, reason string) ([]string, error) {
			return s.approvals.RevokeGrantsOf(ctx, approver, by, reason) // set below, before any request
		}, aopts.Logger)
	}
	if s.approvals, err = approval.New(ctx, s.db, recorder, aopts); err != nil {
		return err
	}
	if s.shared, err = openReplicaShared(ctx, s.db); err != nil {
		return err
	}
	s.pageOpts = PageOptions(c, aopts.Logger)
	s.pageOpts.Sessions = s.shared.sessions
	s.pageOpts.Identity, s.pageOpts.People, s.pageOpts.MaxAuthAge = idp, people, c.Approval.MaxAuthAge
	return nil
}

// startUpstreams connects to the upstream MCP servers, whose tools join
// the catalog, and warns of policies for tools none of them offers. The
// manager is made without upstreams too: a reload may add some.
func (s *Stack) startUpstreams(ctx context.Context, recorder metrics.Recorder, log *slog.Logger) error {
	c := s.cfg
	pins, err := pinstore.Open(ctx, s.db, recorder)
	if err != nil {
		return err
	}
	s.upstreams, err = upstream.Start(ctx, c.Upstreams, s.tools, upstream.Options{
		Logger: log.With("component", "upstream"), Version: s.version,
		Pins: pins, Policy: namesPolicy(c),
	})
	if err != nil {
		return err
	}
	warnUnknownUpstreamTools(c, s.upstreams, s.tools, log)
	return nil
}

// namesPolicy reports whether a policy under c's tools names a tool.
func namesPolicy(c *config.Config) func(string) bool {
	return func(name string) bool { _, ok := c.Tools[name]; return ok }
}

// warnUnknownUpstreamTools warns of policies for tools no upstream
// offers, once every upstream is up.
func warnUnknownUpstreamTools(c *config.Config, m *upstream.Manager, cat *tools.Catalog, log *slog.Logger) {
	for _, st := range m.Status() {
		if !st.Up {
			return // its tools are not listed: nothing to judge yet
		}
	}
	for _, err := range UnknownUpstreamTools(c, cat) {
		log.Warn("policy for a tool no upstream offers; check the name", "err", err)
	}
}

// newGuard opens what the guard keeps (usage amounts, token signer) and
// makes the guard every call goes through.
func (s *Stack) newGuard(ctx context.Context, policy *authz.Policy, recorder metrics.Recorder, log *slog.Logger) (err error) {
	c := s.cfg
	if s.tokens, err = TokenSigner(c); err != nil {
		return err
	}
	if s.amounts, err = store.OpenAmounts(ctx, s.db); err != nil {
		return err
	}
	s.policy.now.Store(&policyInForce{policy: policy, sum: s.policySum})
	s.guard = guard.New(guard.Options{
		Catalog: s.tools, Policy: s.metrics.Policy(&s.policy), Audit: recorder,
		Requests: s.approvals, Runs: s.approvals, Recovery: s.approvals, Tasks: s.approvals, Grants: s.approvals,
		Evidence: s.approvals, Tokens: s.tokens,
		History: s.audit, Marks: store.Marks{DB: s.db}, Amounts: s.amounts,
		Owner: s.replicaOwner(), Owned: s.ownedEntries(),
		Tools: c.Tools, Logger: log.With("component", "guard"), Freezes: s.approvals,
		SharedUsage: s.shared.usage, People: s.people,
		Limits:   guardLimits(c),
		BlockFor: blockFor(c, log),
	})
	if _, ok := c.Tools["approval_status"]; ok {
		return s.tools.Replace("guard", []*tools.Spec{s.guard.StatusSpec()})
	}
	return nil
}

// blockFor is how long a block-mode call waits before it returns
// authorization_pending for approval_status to collect; without that tool
// the agent could collect nothing, so calls wait until decided.
func blockFor(c *config.Config, log *slog.Logger) time.Duration {
	if _, ok := c.Tools["approval_status"]; !ok && c.Approval.BlockFor > 0 {
		log.Warn("approval.block_for is not applied: the approval_status tool is not offered (add it under tools), "+
			"so block-mode calls wait until decided and clients with a request timeout may give up first",
			"block_for", c.Approval.BlockFor)
		return 0
	}
	return c.Approval.BlockFor
}

// settle runs before anything is served: what the previous process left
// unfinished is cancelled, recorded or resumed (see package guard); the
// usage windows then count what that recorded too. It returns the last
// day of the audit log, which the CIBA usage windows count as well.
func (s *Stack) settle(ctx context.Context) ([]audit.Entry, error) {
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
	return recent, nil
}

// newServer makes the MCP server, with the CIBA endpoints beside it.
func (s *Stack) newServer(ctx context.Context, recent []audit.Entry, log *slog.Logger) error {
	var routes map[string]http.Handler
	var err error
	s.ciba, routes, err = cibaRoutes(ctx, s.cfg, s.guard, s.tokens, recent, s.holders, log.With("component", "ciba"))
	if err != nil {
		return err
	}
	s.server, err = server.New(server.Options{
		Config: s.cfg, Catalog: s.tools, Guard: s.guard, Version: s.version, Logger: log.With("component", "server"),
		Routes: routes, RoutineTasks: s.shared.tasks, Holders: s.holders,
	})
	return err
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
