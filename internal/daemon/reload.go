package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/notify"
)

// A reload (SIGHUP, countersign reload) puts a new mcp.yaml in force
// without a restart, so that the calls waiting for a person keep waiting.
// What it changes is swapped whole, at a few named points, each read once
// by a request at its start, so that a call under way keeps what it began
// with:
//
//   - the policy (tools, approvers' roles, approval.timeout): livePolicy,
//     which stamps each decision with the hash of the policy that made it;
//   - the approvers: approval.Service.SetApprovers;
//   - the agents' static tokens and OAuth access tokens (http.oauth):
//     server.Server.SetAgents and SetOAuth;
//   - per-tool settings and the limits (pending, rate, arguments):
//     guard.Reconfigure;
//   - the notification channels: liveNotify;
//   - the upstreams: upstream.Manager.Prepare starts those added or
//     changed before anything else changes (one that cannot start refuses
//     the file), Commit puts them in force and retires the removed and
//     replaced ones once their calls under way have answered.
//
// Everything else (listen addresses, the data directory, the store, keys,
// the approver page's origins, which built-in tools exist …)
// is fixed at start: a file that changes any of it is refused whole, and
// the refusal names each setting; the running configuration stays.

// livePolicy is the guard's policy: the one in force, swapped whole.
type livePolicy struct {
	now atomic.Pointer[policyInForce]
}

type policyInForce struct {
	policy *authz.Policy
	sum    string // its policy.loaded entry's policy_sha256
}

func (l *livePolicy) Decide(in authz.Input) authz.Decision {
	p := l.now.Load()
	d := p.policy.Decide(in)
	d.PolicySHA256 = p.sum
	return d
}

func (l *livePolicy) UsesUsage(tool string) bool { return l.now.Load().policy.UsesUsage(tool) }

func (l *livePolicy) MayCountersign(tool string, readOnly bool) bool {
	return l.now.Load().policy.MayCountersign(tool, readOnly)
}

// liveNotify is approval's notification observer: the channels in force,
// swapped whole.
type liveNotify struct {
	now    atomic.Pointer[notifyInForce]
	people *identity.People // the identity provider's (nil without one), fixed at start
}

type notifyInForce struct {
	n *notify.Notifier // nil: no channels
	f func(string, *approval.Request)
}

func (l *liveNotify) observe(event string, r *approval.Request) {
	if p := l.now.Load(); p != nil && p.f != nil {
		p.f(event, r)
	}
}

// reloads is what a reload needs beyond the stack: the configuration in
// force, the listener addresses as the file named them, and one reload at
// a time.
type reloads struct {
	mu       sync.Mutex
	cfg      *config.Config // in force; the stack's own cfg is the one it started with
	httpAddr string         // http.addr as the file said it, before the listener bound it
	pageAddr string         // the approver page's bound address
}

// ReloadError is a configuration a reload refused; the running one stays.
type ReloadError struct{ Err error }

func (e *ReloadError) Error() string {
	return "reload refused, the running configuration stays: " + e.Err.Error()
}
func (e *ReloadError) Unwrap() error { return e.Err }

// Reload puts c in force, or refuses it whole (a *ReloadError) and
// changes nothing. It records the policy in a policy.loaded entry, then
// swaps each part; a call under way keeps the policy that decided it.
func (s *Stack) Reload(ctx context.Context, c *config.Config, log *slog.Logger) error {
	r := &s.reloads
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cfg
	s.settleAddresses(c)
	if fixed := RestartOnly(old, c); len(fixed) > 0 {
		return &ReloadError{fmt.Errorf("%s: these settings change only with a restart: %s", c.Source, strings.Join(fixed, ", "))}
	}
	if c.HTTP.Addr != "" && len(c.HTTP.Agents) == 0 && !c.HTTP.OAuth.Enabled() && !Loopback(c.HTTP.Addr) {
		return &ReloadError{fmt.Errorf("%s: http.agents: an HTTP listener on %s (not loopback) needs at least one agent token", c.Source, c.HTTP.Addr)}
	}
	policy, err := CompilePolicy(c, log.With("component", "authz"))
	if err != nil {
		return &ReloadError{err}
	}
	var approvers []approval.Approver
	for _, a := range c.Approvers {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	// The upstreams it adds or changes start before anything changes: one
	// that cannot start refuses the file.
	ups, err := s.upstreams.Prepare(ctx, c.Upstreams)
	if err != nil {
		return &ReloadError{fmt.Errorf("%s: upstreams: %w", c.Source, err)}
	}
	// Recorded before it decides anything: every decision names a policy
	// an earlier policy.loaded carries.
	sum, err := logPolicy(ctx, s.audit, c)
	if err != nil {
		ups.Abort()
		return fmt.Errorf("reload: recording the policy, the running configuration stays: %w", err)
	}
	s.approvals.SetApprovers(approvers) // config checked their ids
	s.policy.now.Store(&policyInForce{policy: policy, sum: sum})
	s.server.SetAgents(c.HTTP.Agents) // and the names an OAuth token may not take
	s.server.SetOAuth(c.HTTP.OAuth)
	s.guard.Reconfigure(c.Tools, guardLimits(c))
	s.swapNotifier(c, log)
	ups.Commit(namesPolicy(c))
	s.ciba.SetUpstreams(c.Upstreams)
	if err := s.ciba.SetPeople(c.HTTP.Agents, c.Approvers); err != nil {
		// config checked the hashes; should one slip through, the
		// backchannel keeps the agents it had rather than none.
		log.Error("reload: the CIBA backchannel keeps its agents", "err", err)
	}
	if ups.Changed() {
		warnUnknownUpstreamTools(c, s.upstreams, s.tools, log.With("component", "upstream"))
	}
	r.cfg = c
	s.inForce.Store(c)
	return nil
}

// settleAddresses makes c say what the running configuration says where
// only the listeners made them differ: the bound address of a port 0, and
// what the approver page's address derives.
func (s *Stack) settleAddresses(c *config.Config) {
	r := &s.reloads
	if c.HTTP.Addr == r.httpAddr {
		c.HTTP.Addr = r.cfg.HTTP.Addr
	}
	if _, port, _ := net.SplitHostPort(c.Approval.Listen); port == "0" && c.Approval.Derived() && r.pageAddr != "" {
		host, _, _ := net.SplitHostPort(c.Approval.Listen)
		_, bound, _ := net.SplitHostPort(r.pageAddr)
		_ = c.Approval.Derive(net.JoinHostPort(host, bound)) // as openListeners did
	}
}

// swapNotifier starts c's notification channels and stops the old ones
// once they have sent what they hold.
func (s *Stack) swapNotifier(c *config.Config, log *slog.Logger) {
	n, f := notifier(c, s.metrics.Recorder(s.audit), s.metrics, s.notify.people, log.With("component", "notify"))
	old := s.notify.now.Swap(&notifyInForce{n: n, f: f})
	s.notifier = n
	if old != nil && old.n != nil {
		go old.n.Close()
	}
}

// liveSettings are the settings a reload changes in place: RestartOnly
// does not compare them.
var liveSettings = []string{"approvers", "tools", "notify", "http.agents", "approval.timeout", "upstreams",
	"limits.pending_per_agent", "limits.pending_total", "limits.calls_per_second", "limits.call_burst",
	"limits.max_arg_bytes", "limits.max_arg_depth", "http.oauth"}

// RestartOnly names the settings that differ between old and c and change
// only with a restart, sorted: every setting but liveSettings, and, under
// tools, adding or removing a built-in tool (which opens its backend).
func RestartOnly(old, c *config.Config) []string {
	var out []string
	ov, nv := reflect.ValueOf(*old), reflect.ValueOf(*c)
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		a, b := ov.Field(i), nv.Field(i)
		if f.Type.Kind() != reflect.Struct {
			if !slices.Contains(liveSettings, name) && !reflect.DeepEqual(a.Interface(), b.Interface()) {
				out = append(out, name)
			}
			continue
		}
		for j := range f.Type.NumField() {
			sf := f.Type.Field(j)
			sub := sf.Tag.Get("mapstructure")
			if !sf.IsExported() || sub == "" || sub == "-" {
				continue
			}
			path := name + "." + sub
			if !slices.Contains(liveSettings, path) && !reflect.DeepEqual(a.Field(j).Interface(), b.Field(j).Interface()) {
				out = append(out, path)
			}
		}
	}
	for _, name := range config.BuiltinTools() {
		_, was := old.Tools[name]
		if _, is := c.Tools[name]; was != is {
			out = append(out, "tools."+name+" (adding or removing a built-in tool)")
		}
	}
	slices.Sort(out)
	return out
}

// guardLimits are the guard's limits from c.
func guardLimits(c *config.Config) guard.Limits {
	return guard.Limits{PendingPerAgent: c.Limits.PendingPerAgent, PendingTotal: c.Limits.PendingTotal,
		CallsPerSecond: float64(c.Limits.CallsPerSecond), CallBurst: c.Limits.CallBurst,
		MaxArgBytes: c.Limits.MaxArgBytes, MaxArgDepth: c.Limits.MaxArgDepth}
}

// logPolicy is LogPolicy returning the policy's hash.
func logPolicy(ctx context.Context, log *audit.Log, c *config.Config) (string, error) {
	e, err := loadPolicy(ctx, log, c)
	if err != nil {
		return "", err
	}
	return e.PolicySHA256, nil
}

var errNoReload = errors.New("this server was started without a way to read its configuration again")

// Reload reads the configuration again (Options.Load) and puts it in
// force (Stack.Reload), or refuses it and keeps the running one.
func (d *Daemon) Reload(ctx context.Context) error {
	if d.opts.Load == nil {
		return errNoReload
	}
	c, err := d.opts.Load()
	if err != nil {
		return &ReloadError{err}
	}
	return d.stack.Reload(ctx, c, d.log)
}

// reloadOnSignal reloads on each Options.Reload signal until ctx ends or
// the returned function is called, which waits for a reload under way.
// Each outcome is logged and written into the data directory's lock file,
// where countersign reload reads it.
func (d *Daemon) reloadOnSignal(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.opts.Reload:
			}
			d.log.Info("reloading the configuration", "config", d.stack.cfg.Source)
			outcome := "reloaded"
			if err := d.Reload(ctx); err != nil {
				outcome = err.Error()
				d.log.Error("reload refused; the running configuration stays", "err", err)
			} else {
				d.log.Info("configuration reloaded", "config", d.stack.cfg.Source,
					"policy_sha256", d.stack.policy.now.Load().sum)
			}
			d.lock.holder.Reloads++
			d.lock.holder.Reload = outcome
			if err := d.lock.Update(d.lock.holder); err != nil {
				d.log.Warn("writing the reload's outcome into the lock file", "err", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}
