package guard

import (
	"context"
	"strconv"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// What a gone process counted in the shared usage windows, rebuilt to be
// given back by whoever settles what it left: see sharedusage.go.

// decidedBefore bounds how long before its request or entry a call was
// decided and counted: a rebuilt share is given back from the minutes
// between then and its request or entry (store.UsageWindows.ReleaseOnce).
const decidedBefore = 2 * time.Minute

// shares rebuilds the shared reservations a gone process held, reading
// the kept amounts once, when first needed.
type shares struct {
	g      *Guard
	kept   map[string]store.Amount
	loaded bool
}

func (g *Guard) shares() *shares { return &shares{g: g} }

// of is the share call id counted, a call of e.Agent's e.Tool decided
// shortly before at: its keys and amount come from the kept amounts or
// e's arguments (valueOf). It is nil where nothing was counted in the
// shared windows, or nothing that old still counts.
func (s *shares) of(ctx context.Context, id string, e audit.Entry, at time.Time) *reservation {
	g := s.g
	if g.opts.SharedUsage == nil || !g.opts.Policy.UsesUsage(e.Tool) {
		return nil
	}
	m := minuteOf(at)
	if m < minuteOf(g.now().Add(-usageHorizon)) {
		return nil
	}
	s.load(ctx)
	v := g.valueOf(ctx, e, s.kept)
	r := &reservation{id: id, min: m, since: minuteOf(at.Add(-decidedBefore)), keys: keysOf(e.Agent, e.Tool, v), shared: true}
	if v != nil {
		r.amount = v.Amount
	}
	return r
}

// load reads the kept amounts, once.
func (s *shares) load(ctx context.Context) {
	if s.loaded {
		return
	}
	kept, err := s.g.keptAmounts(ctx)
	if err != nil {
		// From the logged arguments, then; redacted ones give back
		// the call without its amount, which counts more, never less.
		s.g.log.Warn("cannot read the kept amounts to rebuild usage shares", "err", err)
	}
	s.kept, s.loaded = kept, true
}

// actionCallID names the share of the i-th action of backchannel request
// id in the shared windows, for ReleaseOnce.
func actionCallID(id string, i int) string { return requestCallID(id) + "#action" + strconv.Itoa(i) }

// ofActions are the shares a backchannel request's actions counted under
// their own tools when it was raised (Raise), rebuilt from the amounts
// kept for them (keepActions) under the ids Raise gave them. Actions
// whose amounts were not kept are not rebuilt: they count until their
// window passes.
func (s *shares) ofActions(ctx context.Context, u approval.Unfinished) []*reservation {
	if s.g.opts.SharedUsage == nil {
		return nil
	}
	s.load(ctx)
	byArgs := make(map[string]store.Amount, len(s.kept))
	for _, r := range s.kept {
		byArgs[r.ArgsSHA256] = r
	}
	request := storedEntry(u).ArgsSHA256
	var out []*reservation
	for i, a := range keptActions(request, byArgs) {
		e := audit.Entry{Agent: u.Agent, Tool: a.Tool, ArgsSHA256: actionSHA256(request, i)}
		if r := s.of(ctx, actionCallID(u.ID, i), e, u.CreatedAt); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// watchActions holds the shares of backchannel request id, which a gone
// process raised, until it ends: given back if it ends without its token
// (countWhileLive), as its raiser would have. Each request is watched
// once however often a reap finds it.
func (g *Guard) watchActions(id string, counted []*reservation) {
	if len(counted) == 0 || g.opts.Requests == nil {
		return
	}
	g.parkMu.Lock()
	_, dup := g.watched[id]
	if dup || g.parkedDone {
		g.parkMu.Unlock()
		return
	}
	if g.watched == nil {
		g.watched = map[string]struct{}{}
	}
	g.watched[id] = struct{}{}
	g.parkMu.Unlock()
	go func() {
		g.countWhileLive(id, counted)
		g.parkMu.Lock()
		delete(g.watched, id)
		g.parkMu.Unlock()
	}()
}

// ofRequest is the share of a stored request's call. A backchannel
// request's actions count under their own tools, held by countWhileLive,
// and are rebuilt by ofActions.
func (s *shares) ofRequest(ctx context.Context, u approval.Unfinished) *reservation {
	if u.Wait == approval.WaitBackchannel {
		return nil
	}
	e := storedEntry(u)
	e.Args = u.Args // the request keeps them, redacted or not
	return s.of(ctx, requestCallID(u.ID), e, u.CreatedAt)
}

// ofEntry is the share of a routine call, allowed by entry a, if its
// decision read usage (the entry says so: it records the usage seen).
func (s *shares) ofEntry(ctx context.Context, a audit.Entry) *reservation {
	at, err := time.Parse(time.RFC3339Nano, a.Time)
	if len(a.Usage) == 0 || err != nil {
		return nil
	}
	return s.of(ctx, entryCallID(a.Seq), a, at)
}

// neverRan says a request's state is an end in which its call did not
// run: its share is given back. Executed and interrupted calls (which may
// have acted) keep counting, as RestoreUsage counts them.
func neverRan(s vocab.State) bool {
	switch s {
	case vocab.StateDenied, vocab.StateExpired, vocab.StateCancelled, vocab.StateFailed:
		return true
	}
	return false
}

// releaseUnrun gives r back if request id, as stored now, ended without
// its call running. If the request cannot be read, r keeps counting.
func (g *Guard) releaseUnrun(ctx context.Context, id string, r *reservation) {
	if r == nil || g.opts.Runs == nil {
		return
	}
	u, err := g.opts.Runs.Stored(ctx, id)
	if err != nil {
		g.log.Warn("cannot read a request to tell whether its usage share goes back; it counts until the window passes it",
			"auth_req_id", id, "err", err)
		return
	}
	if neverRan(u.State) {
		g.usage.release(r)
	}
}

// releaseCancelled gives back the shares of the requests a restart or a
// reap just cancelled: their callers died with their process.
func (g *Guard) releaseCancelled(ctx context.Context, ids []string) {
	if g.opts.SharedUsage == nil || g.opts.Runs == nil {
		return
	}
	sh := g.shares()
	for _, id := range ids {
		u, err := g.opts.Runs.Stored(ctx, id)
		if err != nil {
			g.log.Warn("cannot read a cancelled request to give its usage share back; it counts until the window passes it",
				"auth_req_id", id, "err", err)
			continue
		}
		g.usage.release(sh.ofRequest(ctx, *u))
	}
}
