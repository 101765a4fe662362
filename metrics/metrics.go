// Package metrics exposes a running Countersign to Prometheus, so that an
// operator can graph and alert on it: how many tool calls ended how, how
// long the policy takes, how many approvals wait and for how long, and how
// the audit log keeps up.
//
// The packages on a call's path (guard, approval, audit) know nothing of
// Prometheus. cmd wraps two of the small interfaces they already take: the
// audit recorder ([Metrics.Recorder]) and the policy ([Metrics.Policy]).
// Every count is taken from an entry the audit log accepted, so the metrics
// say what the log says: a call's outcome is the entry that ends it, an
// approval's state the entry that records it.
//
//	countersign_tool_calls_total{tool,outcome}   outcome: executed, failed, rejected, denied,
//	                                             approval_denied, expired, cancelled
//	countersign_policy_decision_seconds{level}   histogram
//	countersign_approval_requests_total{state}   state: requested, approved, denied, expired, cancelled
//	countersign_approval_wait_seconds{state}     histogram, from request to decision
//	countersign_approvals_pending                gauge
//	countersign_audit_appends_total{kind}        entries committed
//	countersign_audit_append_errors_total        appends that failed
//	countersign_audit_append_seconds             histogram, until durably committed
//	countersign_audit_queue_depth                gauge, appends waiting to be committed
//	countersign_notifications_total{channel,outcome}  channel: webhook, slack, ntfy;
//	                                             outcome: sent, retry, failed, dropped
//	countersign_approval_page_refusals_total{check}  approver page: Host, Origin, CSRF, format, rate
//	countersign_witness_cosigned_tree_size{witness}  newest checkpoint a C2SP witness cosigned
//	countersign_witness_lag_entries{witness}     entries checkpointed, not yet cosigned
//	countersign_witness_lag_seconds{witness}     age of the oldest uncosigned checkpoint
//	countersign_witness_refused{witness}         1 while the witness refuses the log
//	countersign_audit_export_lag_entries         entries audit.export has not delivered yet
//
// plus the Go runtime and process collectors. Each [Metrics] has its own
// registry, never the global default, so two in one process (tests) do not
// collide.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/vocab"
)

// Options wire what the metrics read on each scrape.
type Options struct {
	// Pending counts the approval requests waiting for a decision.
	Pending func(ctx context.Context) (int, error)
	// KnownTool reports whether the catalog has a tool. A call to a tool it
	// does not have is counted under tool="(unknown)": the name is the
	// agent's, and labels must not grow with what agents send.
	KnownTool func(name string) bool
	// Witnesses reports each configured C2SP witness's progress
	// (countersign_witness_*); nil when there are none.
	Witnesses func() []WitnessStatus
	// ExportLag reports the entries audit.export has yet to deliver
	// (countersign_audit_export_lag_entries); nil when there is no export.
	ExportLag func(ctx context.Context) (int64, error)
	// Version labels countersign_build_info.
	Version string
	Logger  *slog.Logger
}

// Metrics holds one process's collectors.
type Metrics struct {
	opts Options
	reg  *prometheus.Registry

	calls         *prometheus.CounterVec
	decision      *prometheus.HistogramVec
	approvals     *prometheus.CounterVec
	approvalWait  *prometheus.HistogramVec
	appends       *prometheus.CounterVec
	appendErrors  prometheus.Counter
	appendSeconds prometheus.Histogram
	queue         prometheus.Gauge
	notified      *prometheus.CounterVec

	pageOnce     sync.Once
	pageRefusals *prometheus.CounterVec // see ApproverPage

	mu        sync.Mutex
	requested map[string]time.Time // pending approval requests by id, for their wait time
}

// Outcomes of a tool call, by the kind of the audit entry that ends it.
var outcomes = map[vocab.Kind]string{
	vocab.KindCallExecuted:      "executed",
	vocab.KindCallFailed:        "failed",
	vocab.KindCallInterrupted:   "interrupted", // sent, no answer: outcome unknown
	vocab.KindCallRejected:      "rejected",
	vocab.KindCallDenied:        "denied",
	vocab.KindApprovalDenied:    "approval_denied",
	vocab.KindApprovalExpired:   "expired",
	vocab.KindApprovalCancelled: "cancelled",
}

// States of an approval request, by the kind of the entry that records it.
var states = map[vocab.Kind]string{
	vocab.KindApprovalRequested: "requested",
	vocab.KindApprovalApproved:  "approved",
	vocab.KindApprovalDenied:    "denied",
	vocab.KindApprovalExpired:   "expired",
	vocab.KindApprovalCancelled: "cancelled",
}

// New returns the collectors of one process, registered on their own
// registry.
func New(opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{opts: opts, reg: prometheus.NewRegistry(), requested: map[string]time.Time{}}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_tool_calls_total",
		Help: "Tool calls by tool and outcome (the audit entry that ended the call).",
	}, []string{"tool", "outcome"})
	m.decision = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "countersign_policy_decision_seconds",
		Help:    "Time the policy took to decide a call, by the level it decided.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05},
	}, []string{"level"})
	m.approvals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_approval_requests_total",
		Help: "Approval requests raised (state requested) and decided, by state.",
	}, []string{"state"})
	m.approvalWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "countersign_approval_wait_seconds",
		Help:    "Time from an approval request to its decision, by the state it ended in.",
		Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	}, []string{"state"})
	m.appends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_audit_appends_total",
		Help: "Audit entries durably committed, by kind.",
	}, []string{"kind"})
	m.appendErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "countersign_audit_append_errors_total",
		Help: "Audit appends that failed; the action each would have recorded did not proceed.",
	})
	m.appendSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "countersign_audit_append_seconds",
		Help:    "Time from an audit append to its durable commit (group commit included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.queue = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "countersign_audit_queue_depth",
		Help: "Audit appends waiting to be committed (queued, or in the transaction being written).",
	})
	m.notified = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_notifications_total",
		Help: "Notification attempts by channel type and outcome (sent, retry, failed, dropped).",
	}, []string{"channel", "outcome"})
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "countersign_approvals_pending",
		Help: "Approval requests waiting for a decision.",
	}, m.pending)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "countersign_build_info",
		Help:        "Always 1; the version label says which build is running.",
		ConstLabels: prometheus.Labels{"version": opts.Version},
	})
	build.Set(1)
	m.reg.MustRegister(m.calls, m.decision, m.approvals, m.approvalWait, m.appends, m.appendErrors,
		m.appendSeconds, m.queue, m.notified, pending, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.ExportLag != nil {
		m.reg.MustRegister(exportCollector{m})
	}
	if opts.Witnesses != nil {
		m.reg.MustRegister(witnessCollector{opts.Witnesses})
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(m.opts.Logger.Handler(), slog.LevelWarn),
	})
}

// Gatherer is the registry, for tests and for embedding in another.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

func (m *Metrics) pending() float64 {
	if m.opts.Pending == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := m.opts.Pending(ctx)
	if err != nil {
		m.opts.Logger.Warn("metrics: counting pending approvals", "err", err)
		return 0
	}
	return float64(n)
}

// Notified counts one notification attempt's outcome; it is the
// notifier's Outcome.
func (m *Metrics) Notified(channel, outcome string) {
	m.notified.WithLabelValues(channel, outcome).Inc()
}

// Recorder is the audit log as guard and approval use it.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Recorder wraps next so that every append is timed and every committed
// entry counted.
func (m *Metrics) Recorder(next Recorder) Recorder { return &recorder{m: m, next: next} }

type recorder struct {
	m    *Metrics
	next Recorder
}

func (r *recorder) Append(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	r.m.queue.Inc()
	start := time.Now()
	out, err := r.next.Append(ctx, e)
	r.m.appendSeconds.Observe(time.Since(start).Seconds())
	r.m.queue.Dec()
	if err != nil {
		r.m.appendErrors.Inc()
		return out, err
	}
	r.m.observe(out)
	return out, nil
}

// logReader is the reading side of *audit.Log.
type logReader interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
	LastSeq(ctx context.Context) (int64, error)
}

// Since reads through to the log: approval reads the end of the log back
// (an assertion's seq, an entry a dead process may have appended) through
// the recorder it was given.
func (r *recorder) Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error) {
	lr, ok := r.next.(logReader)
	if !ok {
		return nil, errors.New("metrics: the wrapped recorder cannot be read")
	}
	return lr.Since(ctx, seq, limit)
}

// LastSeq reads through to the log, as Since does.
func (r *recorder) LastSeq(ctx context.Context) (int64, error) {
	lr, ok := r.next.(logReader)
	if !ok {
		return 0, errors.New("metrics: the wrapped recorder cannot be read")
	}
	return lr.LastSeq(ctx)
}

// observe counts one committed entry.
func (m *Metrics) observe(e audit.Entry) {
	m.appends.WithLabelValues(string(e.Kind)).Inc()
	if outcome, ok := outcomes[e.Kind]; ok {
		tool := e.Tool
		if m.opts.KnownTool != nil && !m.opts.KnownTool(tool) {
			tool = "(unknown)"
		}
		m.calls.WithLabelValues(tool, outcome).Inc()
	}
	state, ok := states[e.Kind]
	if !ok {
		return
	}
	m.approvals.WithLabelValues(state).Inc()
	at, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil || e.RequestID == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if state == "requested" {
		m.requested[e.RequestID] = at
		m.forgetOld(at)
		return
	}
	if since, ok := m.requested[e.RequestID]; ok {
		delete(m.requested, e.RequestID)
		m.approvalWait.WithLabelValues(state).Observe(at.Sub(since).Seconds())
	}
}

// forgetOld drops requests whose decision this process will not see
// (decided by another process sharing the database), so the map stays
// small. No request lives a day.
func (m *Metrics) forgetOld(now time.Time) {
	if len(m.requested) < 10000 {
		return
	}
	for id, at := range m.requested {
		if now.Sub(at) > 24*time.Hour {
			delete(m.requested, id)
		}
	}
}

// Policy decides a call's level; *authz.Policy satisfies it.
type Policy interface {
	Decide(in authz.Input) authz.Decision
	UsesUsage(tool string) bool
	MayCountersign(tool string, readOnly bool) bool
}

// Policy wraps next so that every decision is timed.
func (m *Metrics) Policy(next Policy) Policy { return &policy{m: m, next: next} }

type policy struct {
	m    *Metrics
	next Policy
}

func (p *policy) UsesUsage(tool string) bool { return p.next.UsesUsage(tool) }

func (p *policy) MayCountersign(tool string, readOnly bool) bool {
	return p.next.MayCountersign(tool, readOnly)
}

func (p *policy) Decide(in authz.Input) authz.Decision {
	start := time.Now()
	d := p.next.Decide(in)
	p.m.decision.WithLabelValues(string(d.Level)).Observe(time.Since(start).Seconds())
	return d
}
