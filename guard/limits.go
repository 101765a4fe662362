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
	// raise one more is refused before the request is created.
	PendingPerAgent int
	PendingTotal    int
	// CallsPerSecond and CallBurst are each agent's token bucket for tool
	// calls; a call over it is refused before anything else.
	CallsPerSecond float64
	CallBurst      int
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

// PendingCounter counts waiting approval requests; *approval.Service
// satisfies it. Requests that do not (test doubles) get no pending caps.
type PendingCounter interface {
	PendingFor(ctx context.Context, agent string) (int, error)
	PendingCount(ctx context.Context) (int, error)
}

// limiter keeps the per-agent buckets, the requests being raised, and the
// tally of refusals not yet in the log.
type limiter struct {
	opts    Limits
	counter PendingCounter // nil: no pending caps
	rec     func(context.Context, audit.Entry) bool
	now     func() time.Time

	mu       sync.Mutex
	buckets  map[string]*rate.Limiter
	raising  map[string]int // passed the pending check, request not yet created
	raisingN int
	tallies  map[tallyKey]*tally
	closed   bool
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

func newLimiter(opts Limits, requests Requests, rec func(context.Context, audit.Entry) bool, now func() time.Time) *limiter {
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
	l := &limiter{opts: opts, rec: rec, now: now,
		buckets: map[string]*rate.Limiter{}, raising: map[string]int{}, tallies: map[tallyKey]*tally{}}
	l.counter, _ = requests.(PendingCounter)
	return l
}

// admitCall takes a token from the agent's bucket; over it, the call is
// refused (and tallied) before anything else is done.
func (g *Guard) admitCall(ctx context.Context, agent, tool string) *mcp.CallToolResult {
	l := g.limits
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

// pendingSlot is a pending-cap reservation (admitRequest): it counts as
// one pending request of its agent until the request is stored, so calls
// made in parallel cannot all pass the check. The zero slot holds nothing:
// there are no pending caps.
type pendingSlot struct {
	l     *limiter
	agent string
}

// release gives the slot back; the stored request now counts instead.
func (s pendingSlot) release() {
	if s.l != nil {
		s.l.unreserve(s.agent)
	}
}

// admitRequest checks the pending caps before a call raises an approval
// request. On success it returns the slot the request takes until
// createRequest has stored it.
func (g *Guard) admitRequest(ctx context.Context, agent, tool string) (pendingSlot, *mcp.CallToolResult) {
	slot, err := g.reservePending(ctx, agent, tool)
	var le *limitError
	switch {
	case errors.As(err, &le):
		return slot, toolError("refused: %v", le)
	case err != nil:
		return slot, toolError("refused: cannot count the approval requests waiting (%v); try again", err)
	}
	return slot, nil
}

// reservePending is admitRequest for callers that want an error (Raise):
// a *limitError, already tallied for call.rate_limited, or a failure to
// count.
func (g *Guard) reservePending(ctx context.Context, agent, tool string) (pendingSlot, error) {
	l := g.limits
	if l.counter == nil {
		return pendingSlot{}, nil
	}
	if err := l.reserve(ctx, agent); err != nil {
		var le *limitError
		if !errors.As(err, &le) {
			g.log.Error("cannot count pending approval requests", "agent", agent, "err", err)
			return pendingSlot{}, err
		}
		l.refused(ctx, agent, tool, le.limit)
		return pendingSlot{}, le
	}
	return pendingSlot{l: l, agent: agent}, nil
}

// createRequest raises r in the slot admitRequest took for it, and gives
// the slot back once the request is stored (or failed).
func (g *Guard) createRequest(ctx context.Context, slot pendingSlot, r approval.NewRequest) (*approval.Request, error) {
	defer slot.release()
	return g.opts.Requests.Create(ctx, r)
}

// limitError is a pending cap that refused a request.
type limitError struct {
	limit, msg string
}

func (e *limitError) Error() string { return e.msg }

// reserve counts agent's waiting requests (stored, and being raised) and
// takes a slot, or says which cap refused it.
func (l *limiter) reserve(ctx context.Context, agent string) error {
	// Count outside the lock (a database read); the reservations taken
	// meanwhile are added under it.
	mine, err := l.counter.PendingFor(ctx, agent)
	if err != nil {
		return err
	}
	all, err := l.counter.PendingCount(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := mine + l.raising[agent]; n >= l.opts.PendingPerAgent {
		lim := fmt.Sprintf("limits.pending_per_agent (%d)", l.opts.PendingPerAgent)
		return &limitError{limit: lim, msg: fmt.Sprintf("agent %s already has %d approval requests waiting for a human, the most %s allows; "+
			"wait for them to be decided or to expire", agent, n, lim)}
	}
	if n := all + l.raisingN; n >= l.opts.PendingTotal {
		lim := fmt.Sprintf("limits.pending_total (%d)", l.opts.PendingTotal)
		return &limitError{limit: lim, msg: fmt.Sprintf("%d approval requests are waiting for a human, the most %s allows; try again later", n, lim)}
	}
	l.raising[agent]++
	l.raisingN++
	return nil
}

func (l *limiter) unreserve(agent string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.raising[agent] > 0 {
		l.raising[agent]--
		l.raisingN--
	}
	if l.raising[agent] == 0 {
		delete(l.raising, agent)
	}
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
