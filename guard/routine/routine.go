// Package routine tracks one process's routine calls from their
// call.allowed entry to their outcome entry, for the guard: how far the
// routine-call mark may move, and which outcomes could not be recorded
// and are still to be.
package routine

import (
	"slices"
	"sync"
)

// Calls tracks this process's routine calls from their call.allowed entry
// to their outcome entry, so that the mark can move to a seq M with every
// call allowed at or before M having its outcome at or before M. Then an
// outcome after M always belongs to a call allowed after M, and reading
// the log from M pairs every outcome with its own call. A call whose
// outcome could not be recorded stays open, holding the mark before it,
// until its outcome is recorded late (End again): should the process die
// first, the next start settles it from the mark.
type Calls struct {
	mu      sync.Mutex
	pending int                // calls appending their call.allowed now
	open    map[int64]struct{} // seq of call.allowed, outcome not yet recorded
	lost    []int64            // open calls whose outcome could not be recorded
	ended   []span             // ended calls whose outcome may lie past the mark
	maxSeen int64              // highest seq of an entry of a routine call
}

// span is one routine call: the seq of its call.allowed and of its outcome.
type span struct{ allowed, outcome int64 }

// Appending says a call is appending its call.allowed; Allowed follows.
func (r *Calls) Appending() {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
}

// Allowed says the call.allowed of Appending is at seq, or (ok false)
// could not be appended.
func (r *Calls) Allowed(seq int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending--
	if !ok {
		return
	}
	if r.open == nil {
		r.open = map[int64]struct{}{}
	}
	r.open[seq] = struct{}{}
	r.maxSeen = max(r.maxSeen, seq)
}

// End takes a call out of the open set; outcome is its outcome entry's
// seq, 0 when it could not be recorded: the call then stays open and is
// Lost until End names its outcome.
func (r *Calls) End(allowed, outcome int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if outcome == 0 {
		if _, open := r.open[allowed]; !open {
			return // recorded late already (Late)
		}
		if !slices.Contains(r.lost, allowed) {
			r.lost = append(r.lost, allowed)
		}
		return
	}
	r.lost = slices.DeleteFunc(r.lost, func(s int64) bool { return s == allowed })
	delete(r.open, allowed)
	r.ended = append(r.ended, span{allowed, outcome})
	r.maxSeen = max(r.maxSeen, outcome)
}

// Lost is the seq of each call.allowed whose outcome could not be
// recorded yet, oldest first.
func (r *Calls) Lost() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.lost)
	slices.Sort(out)
	return out
}

// SafeMark is the highest seq M such that every routine call of this
// process allowed at or before M has its outcome at or before M, or false
// when none can be named now (a call is appending its call.allowed, whose
// seq is not known yet).
func (r *Calls) SafeMark() (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending > 0 {
		return 0, false
	}
	mark := r.maxSeen
	for seq := range r.open {
		mark = min(mark, seq-1)
	}
	for moved := true; moved; {
		moved = false
		for _, s := range r.ended {
			if s.allowed <= mark && s.outcome > mark {
				mark, moved = s.allowed-1, true
			}
		}
	}
	// Calls ended at or before the mark cannot hold a later mark back:
	// every later call is allowed after them.
	r.ended = slices.DeleteFunc(r.ended, func(s span) bool { return s.outcome <= mark })
	return mark, true
}
