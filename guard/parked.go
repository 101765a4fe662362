package guard

import (
	"context"
	"errors"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// Runs is the one run of an approved request: claimed, then finished with
// its outcome, read back as stored; OnChange wakes the dispatcher of
// parked requests. *approval.Service satisfies it.
type Runs interface {
	BeginExecution(ctx context.Context, id string) error
	Finish(ctx context.Context, id string, o approval.Outcome) error
	Stored(ctx context.Context, id string) (*approval.Unfinished, error)
	OnChange(fn func(id string))
}

// A poll-mode or task request waits for its humans with nobody holding a
// call open: the guard parks it and runs its call once, when approved,
// from the request as stored (the arguments the approvers signed, prepared
// again), as after a restart. A parked request is a map entry holding its
// usage share, not a goroutine: 10,000 pending requests held a goroutine
// each, 8 KiB of stack apiece, and each re-read its request every second.

// parkedSweep is how often every parked request is read again, for a
// decision another process made; this process's own changes arrive at
// once through approval.Service.OnChange.
const parkedSweep = 30 * time.Second

// park hands request id to the dispatcher. It reports false when the
// guard is shutting down: the request stays pending for the next start.
func (g *Guard) park(id string, counted *reservation) bool {
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	if g.parkedDone {
		return false
	}
	g.parked[id] = counted
	g.markDirty(id)
	return true
}

// changed is the approval service's OnChange hook.
func (g *Guard) changed(id string) {
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	if id == "" {
		g.allDirty = true
		g.kickDispatch()
		return
	}
	if _, ok := g.parked[id]; ok {
		g.markDirty(id)
	}
}

// markDirty queues id for a read; parkMu is held.
func (g *Guard) markDirty(id string) {
	g.dirty[id] = struct{}{}
	g.kickDispatch()
}

func (g *Guard) kickDispatch() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// dispatch reads each parked request that changed and starts its run once
// approved, or lets it go when it ended otherwise.
func (g *Guard) dispatch() {
	defer g.bg.Done()
	sweep := time.NewTicker(parkedSweep)
	defer sweep.Stop()
	for {
		select {
		case <-g.life.Done():
			g.parkMu.Lock()
			g.parkedDone = true
			g.parkMu.Unlock()
			return
		case <-g.kick:
		case <-sweep.C:
			g.parkMu.Lock()
			g.allDirty = true
			g.parkMu.Unlock()
		}
		g.parkMu.Lock()
		var ids []string
		if g.allDirty {
			for id := range g.parked {
				ids = append(ids, id)
			}
			g.allDirty = false
		} else {
			for id := range g.dirty {
				ids = append(ids, id)
			}
		}
		clear(g.dirty)
		g.parkMu.Unlock()
		for _, id := range ids {
			if g.life.Err() != nil {
				break
			}
			g.settleParked(id)
		}
	}
}

// settleParked acts on parked request id's state.
func (g *Guard) settleParked(id string) {
	u, err := g.opts.Runs.Stored(g.life, id)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			g.log.Error("cannot read a parked approval request; the next change or sweep tries again", "auth_req_id", id, "err", err)
		}
		return
	}
	if u.State == vocab.StatePending {
		return
	}
	g.parkMu.Lock()
	counted, ok := g.parked[id]
	delete(g.parked, id)
	g.parkMu.Unlock()
	if !ok {
		return
	}
	if u.State != vocab.StateApproved || u.Claimed {
		// Claimed, it runs elsewhere (another replica resumed it too), and
		// its claimant settles it: the share goes back only if it ended
		// without running.
		if neverRan(u.State) {
			g.usage.release(counted)
		}
		return
	}
	// The dispatcher runs while life lasts, and Shutdown waits on bg only
	// after ending life: adding here cannot race its Wait.
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		// The run is not cut short by a shutdown: it finishes, or the
		// process dies and the next start settles it.
		ctx := context.WithoutCancel(g.life)
		if !g.runStored(ctx, *u) {
			g.releaseUnrun(ctx, id, counted) // not if another replica claimed it first
		}
	}()
}

// runStored runs an approved request resumed from the store: the tool is
// found and the call prepared again, and must come out as the approved
// bytes, or the request fails without running.
// It reports whether the tool ran successfully.
func (g *Guard) runStored(ctx context.Context, u approval.Unfinished) bool {
	entry := storedEntry(u)
	spec, err := g.waitTool(g.life, u.Tool)
	if g.life.Err() != nil {
		return true // shutting down: the next start runs it, and it keeps counting
	}
	var call *tools.Call
	if err == nil {
		call, err = g.prepareStored(ctx, spec, u)
	}
	if err != nil {
		if cerr := g.opts.Runs.BeginExecution(ctx, u.ID); cerr != nil {
			g.log.Error("cannot claim a request to fail it", "auth_req_id", u.ID, "err", cerr)
			return false
		}
		if ferr := g.failClaimed(ctx, u, entry, err); ferr != nil {
			g.log.Error("cannot store approval outcome", "auth_req_id", u.ID, "err", ferr)
		}
		return false
	}
	call.Agent = u.Agent
	_, ok := g.runApproved(ctx, u.ID, spec, call, entry)
	return ok
}
