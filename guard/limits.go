package guard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Limits bound what one agent can make Countersign do, whatever the
// policy says (config limits:). Zero fields get the defaults below.
type Limits struct {
	// PendingPerAgent and PendingTotal cap the approval requests waiting
	// for a human: of one agent, and of all agents. A call that would
	// raise one more is refused, its request never stored (the approval
	// service counts them as it stores it: approval.PendingCaps).
	PendingPerAgent int
	PendingTotal    int
	// CallsPerSecond and CallBurst are each agent's token bucket for tool
	// calls; a call over it is refused before anything else.
	CallsPerSecond float64
	CallBurst      int
	// MaxArgBytes and MaxArgDepth bound a call's arguments (their JSON
	// size and nesting); larger calls are refused before anything else.
	// Zero means 64 KiB and 32.
	MaxArgBytes int
	MaxArgDepth int
}

// Defaults of Limits.
const (
	DefaultPendingPerAgent = 20
	DefaultPendingTotal    = 200
	DefaultCallsPerSecond  = 50
	DefaultCallBurst       = 100
)

// rateLimitedEvery is how often, at most, a call.rate_limited entry is
// written for one agent: a flood of refused calls grows the log by one
// bounded entry a minute, carrying how many calls it stands for.
const rateLimitedEvery = time.Minute

// limiter keeps the per-agent buckets and the tally of refusals not yet
// in the log.
type limiter struct {
	opts Limits
	rec  func(context.Context, audit.Entry) bool
	now  func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	tallies map[tallyKey]*tally
	closed  bool
}

// tallyKey names one agent's refusals of one kind: call.rate_limited
// (over a limit) or call.denied (the agent is frozen, freeze.go).
type tallyKey struct {
	agent string
	kind  vocab.Kind
}

// tally is one agent's refusals since its last entry of their kind.
type tally struct {
	last    time.Time // when the last entry was written
	count   int       // refusals since, not yet recorded
	tool    string    // of the latest refusal
	limit   string    // the limit the latest refusal passed
	flusher *time.Timer
}

func newLimiter(opts Limits, rec func(context.Context, audit.Entry) bool, now func() time.Time) *limiter {
	if opts.PendingPerAgent <= 0 {
		opts.PendingPerAgent = DefaultPendingPerAgent
	}
	if opts.PendingTotal <= 0 {
		opts.PendingTotal = DefaultPendingTotal
	}
	if opts.CallsPerSecond <= 0 {
		opts.CallsPerSecond = DefaultCallsPerSecond
	}
	if opts.CallBurst <= 0 {
		opts.CallBurst = DefaultCallBurst
	}
	if opts.MaxArgBytes <= 0 {
		opts.MaxArgBytes = DefaultMaxArgBytes
	}
	if opts.MaxArgDepth <= 0 {
		opts.MaxArgDepth = DefaultMaxArgDepth
	}
	return &limiter{opts: opts, rec: rec, now: now, buckets: map[string]*rate.Limiter{}, tallies: map[tallyKey]*tally{}}
}

// admitCall takes a token from the agent's bucket; over it, the call is
// refused (and tallied) before anything else is done.
func (g *Guard) admitCall(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	l := g.limits.Load()
	l.mu.Lock()
	b, ok := l.buckets[agent]
	if !ok {
		if len(l.buckets) >= 4096 {
			// Agents are configured or "unknown", so this is rare: forget
			// the buckets that have refilled.
			for k, v := range l.buckets {
				if v.TokensAt(l.now()) >= float64(l.opts.CallBurst) {
					delete(l.buckets, k)
				}
			}
		}
		b = rate.NewLimiter(rate.Limit(l.opts.CallsPerSecond), l.opts.CallBurst)
		l.buckets[agent] = b
	}
	allowed := b.AllowN(l.now(), 1)
	l.mu.Unlock()
	if allowed {
		return nil
	}
	limit := fmt.Sprintf("limits.calls_per_second (%g, burst %d)", l.opts.CallsPerSecond, l.opts.CallBurst)
	l.refused(ctx, agent, tool, limit)
	return toolError("refused: over %s for agent %s; slow down and retry", limit, agent)
}

// createRequest raises r within the pending caps, which the approval
// service counts in the transaction that stores it, so that calls made
// in parallel, here or on other replicas, cannot all pass. A request over
// a cap is refused with a *limitError, tallied for call.rate_limited.
func (g *Guard) createRequest(ctx context.Context, r approval.NewRequest) (*approval.Request, error) {
	l := g.limits.Load()
	r.Caps = approval.PendingCaps{PerAgent: l.opts.PendingPerAgent, Total: l.opts.PendingTotal}
	req, err := g.opts.Requests.Create(ctx, r)
	var ce *approval.CapError
	if !errors.As(err, &ce) {
		return req, err
	}
	le := capRefusal(ce, l.opts)
	l.refused(ctx, r.Agent, r.Tool, le.limit)
	return nil, le
}

// limitError is a pending cap that refused a request.
type limitError struct {
	limit, msg string
}

func (e *limitError) Error() string { return e.msg }

// capRefusal tells the agent which of its limits ce is.
func capRefusal(ce *approval.CapError, opts Limits) *limitError {
	if ce.Agent == "" {
		lim := fmt.Sprintf("limits.pending_total (%d)", opts.PendingTotal)
		return &limitError{limit: lim, msg: fmt.Sprintf("%d approval requests are waiting for a human, the most %s allows; try again later", ce.Pending, lim)}
	}
	lim := fmt.Sprintf("limits.pending_per_agent (%d)", opts.PendingPerAgent)
	return &limitError{limit: lim, msg: fmt.Sprintf("agent %s already has %d approval requests waiting for a human, the most %s allows; "+
		"wait for them to be decided or to expire", ce.Agent, ce.Pending, lim)}
}

// refused tallies one refusal and writes call.rate_limited when the
// agent's last one is a minute old; otherwise a timer writes the tally
// when the minute is up, so a flood that stops is still recorded.
func (l *limiter) refused(ctx context.Context, agent, tool, limit string) {
	l.refusedAs(ctx, vocab.KindCallRateLimited, agent, tool, limit)
}

// refusedAs is refused for refusals recorded as kind; why is the limit
// passed, or for call.denied the reason.
func (l *limiter) refusedAs(ctx context.Context, kind vocab.Kind, agent, tool, why string) {
	key := tallyKey{agent, kind}
	l.mu.Lock()
	t, ok := l.tallies[key]
	if !ok {
		t = &tally{}
		l.tallies[key] = t
	}
	t.count++
	t.tool, t.limit = boundName(tool), why
	now := l.now()
	if !t.last.IsZero() && now.Sub(t.last) < rateLimitedEvery {
		if t.flusher == nil && !l.closed {
			t.flusher = time.AfterFunc(rateLimitedEvery-now.Sub(t.last), func() { l.flush(key) })
		}
		l.mu.Unlock()
		return
	}
	e := l.takeEntry(key, t, now)
	l.mu.Unlock()
	l.rec(context.WithoutCancel(ctx), e)
}

// takeEntry forms the entry for t's refusals and resets it; l.mu is held.
func (l *limiter) takeEntry(key tallyKey, t *tally, now time.Time) audit.Entry {
	calls := "calls"
	if t.count == 1 {
		calls = "call"
	}
	e := audit.Entry{Kind: vocab.KindCallRateLimited, Agent: key.agent, Tool: t.tool,
		Reason: fmt.Sprintf("%d %s refused over limits since the previous call.rate_limited entry; the last: %s", t.count, calls, t.limit)}
	if key.kind == vocab.KindCallDenied {
		e = audit.Entry{Kind: vocab.KindCallDenied, Agent: key.agent, Tool: t.tool, Decision: string(vocab.LevelDeny),
			Reason: fmt.Sprintf("%s (%d %s refused so since the previous such entry)", t.limit, t.count, calls)}
	}
	t.count, t.last = 0, now
	if t.flusher != nil {
		t.flusher.Stop()
		t.flusher = nil
	}
	return e
}

// flush records a tally if it has refusals not yet recorded.
func (l *limiter) flush(key tallyKey) {
	l.mu.Lock()
	t, ok := l.tallies[key]
	if !ok || t.count == 0 {
		if ok {
			t.flusher = nil
		}
		l.mu.Unlock()
		return
	}
	e := l.takeEntry(key, t, l.now())
	l.mu.Unlock()
	l.rec(context.Background(), e)
}

// close stops the timers and records every tally not yet recorded.
func (l *limiter) close() {
	l.mu.Lock()
	l.closed = true
	var keys []tallyKey
	for k, t := range l.tallies {
		if t.flusher != nil {
			t.flusher.Stop()
			t.flusher = nil
		}
		if t.count > 0 {
			keys = append(keys, k)
		}
	}
	l.mu.Unlock()
	for _, k := range keys {
		l.flush(k)
	}
}
