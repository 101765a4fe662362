// Package daemon builds a running Countersign from a validated
// configuration and serves it: it opens the data directory (database,
// audit log, witnesses), wires the packages together (approval, guard,
// tools and upstreams, notifications, CIBA, the MCP server), puts the
// approver page and the agent transports on their listeners, and on
// SIGTERM drains the calls and closes everything in order.
//
// It is the one place that knows how the packages fit together; the
// countersign command parses flags, loads the configuration and calls
// [Serve]. It is internal: its API follows the command's needs, not a
// promise to other modules.
package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
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
	"github.com/countersign/countersign/witness"
)

// Options are what a running Countersign takes from its command rather
// than from its configuration.
type Options struct {
	// Logger receives every log line (stderr: under stdio, stdout carries
	// MCP frames only). Nil discards them.
	Logger *slog.Logger
	// Version is reported at start, in /metrics and to upstream servers.
	Version string
	// Stdin and Stdout carry MCP when no HTTP listener is configured;
	// nil is the process's own.
	Stdin  io.Reader
	Stdout io.Writer
	// Load reads the configuration again, as the command read it at
	// start; Reload asks for that (SIGHUP). Nil: no reloads.
	Load   func() (*config.Config, error)
	Reload <-chan os.Signal
}

func (o Options) stdio() (io.Reader, io.Writer) {
	in, out := o.Stdin, o.Stdout
	if in == nil {
		in = os.Stdin
	}
	if out == nil {
		out = os.Stdout
	}
	return in, out
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Stack is every part of a running Countersign, wired together by
// [Assemble]. Close it when done.
type Stack struct {
	cfg       *config.Config
	version   string
	db        *store.DB
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
	quorums   []authz.Quorum    // what the policy's levels can need (quorum.go)

	// On PostgreSQL, where replicas share the database (replica.go).
	owner       string        // this replica's id: audit entries' owner, its row in replicas
	shared      replicaShared // usage windows, sign-in sessions, routine tasks
	people      guard.People  // the identity provider's people (identity.go); nil without one
	release     func()        // gives up the owner's liveness lock
	fatal       chan error    // a reason this replica must stop (fenced)
	stopLeading func()        // stops the leader's duties and waits for them
	owners      *store.Owners // tells replicas dead or alive (nil on SQLite)
	stopReaping func()        // stops the reaper (replica.go) and waits for it
	leading     atomic.Bool   // led until now, or until shutdown

	// What a reload swaps (reload.go).
	policy    livePolicy
	policySum string // the policy at start's policy_sha256
	notify    liveNotify
	reloads   reloads
	ciba      *ciba.Server
	inForce   atomic.Pointer[config.Config] // the configuration in force, for readiness (a reload swaps it)
}

// The parts, for commands and tests that drive an assembled stack
// in-process rather than through its listeners.

func (s *Stack) Config() *config.Config       { return s.cfg }
func (s *Stack) DB() *store.DB                { return s.db }
func (s *Stack) Audit() *audit.Log            { return s.audit }
func (s *Stack) Tools() *tools.Catalog        { return s.tools }
func (s *Stack) Approvals() *approval.Service { return s.approvals }
func (s *Stack) Tokens() *token.Signer        { return s.tokens }
func (s *Stack) Upstreams() *upstream.Manager { return s.upstreams }
func (s *Stack) Server() *server.Server       { return s.server }

// PageHandler is what the approver listener serves: the page and the
// operations endpoints.
func (s *Stack) PageHandler() http.Handler { return s.pageHandler() }

// Close stops background work first, then the log (which writes a final
// checkpoint) and the witnesses that keep it, then the database.
func (s *Stack) Close() error {
	var errs []error
	if s.server != nil {
		s.server.Close()
	}
	if s.stopReaping != nil {
		s.stopReaping()
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
	if s.stopLeading != nil {
		s.stopLeading() // the checkpoint loop and the witnesses
	}
	if s.audit != nil {
		errs = append(errs, s.audit.Close())
	}
	errs = append(errs, s.witnessFinal())
	if s.amounts != nil {
		errs = append(errs, s.amounts.Close())
	}
	if s.release != nil {
		s.release()
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}
