package guard

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/approval"
)

// reaper is the part of the approval service that finds what dead
// replicas left (*approval.Service).
type reaper interface {
	Reap(ctx context.Context) (cancelled []string, unfinished []approval.Unfinished, err error)
}

// Reap settles, while this replica serves, what dead replicas left, as
// Resume does at start for the previous process: their block-mode
// requests are cancelled, their claimed runs settled (one outcome each:
// a claimed run is settled only once its claimant is dead, and settling
// ends it), their poll-mode and task requests parked here to run once
// approved. The daemon's leader calls it now and then; with an approval
// service that cannot tell replicas dead it does nothing.
func (g *Guard) Reap(ctx context.Context) error {
	r, ok := g.opts.Recovery.(reaper)
	if !ok {
		return nil
	}
	cancelled, unfinished, err := r.Reap(ctx)
	if err != nil {
		return err
	}
	if len(cancelled) > 0 {
		g.log.Info("cancelled block-mode requests whose callers died with another replica",
			"count", len(cancelled), "reason", approval.ReasonRestarted)
	}
	g.releaseCancelled(ctx, cancelled)
	if err := g.settleUnfinished(ctx, unfinished); err != nil {
		return err
	}
	return g.reapRoutine(ctx)
}

// deadPeers is the part of the approval service that names the dead
// replicas (*approval.Service).
type deadPeers interface {
	DeadPeers(ctx context.Context) ([]string, error)
}

// RoutineMark names the mark up to which every routine call owner allowed
// has its outcome: each replica moves its own, so that none moves past
// another's call in flight. It goes with the owner's row once the reaper
// moved it past every entry the owner appended (auditpg.Owned.ForgetMark).
func RoutineMark(owner string) string { return markRoutine + "/" + owner }

// reapRoutine gives each routine call a dead replica left open its one
// outcome, as reconcileRoutine does at start (settleOpenCall): the calls
// it allowed after its own mark, read by the log's owner column. The
// mark then moves past them, so reaping again adds nothing. A dead
// replica without a mark (an older version) is left alone, as a first
// start leaves the history before it.
func (g *Guard) reapRoutine(ctx context.Context) error {
	d, ok := g.opts.Recovery.(deadPeers)
	if !ok || g.opts.Owned == nil || g.opts.History == nil || g.opts.Marks == nil {
		return nil
	}
	dead, err := d.DeadPeers(ctx)
	if err != nil {
		return err
	}
	for _, owner := range dead {
		from, ok, err := g.opts.Marks.Mark(ctx, RoutineMark(owner))
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		seqs, err := g.opts.Owned.Owned(ctx, owner, from)
		if err != nil {
			return err
		}
		if len(seqs) == 0 {
			continue
		}
		owned := make(map[int64]bool, len(seqs))
		for _, s := range seqs {
			owned[s] = true
		}
		// Fenced, it appends nothing more: what it left ends at its last entry.
		if _, err := g.settleOpen(ctx, from, owned); err != nil {
			return fmt.Errorf("guard: settle the routine calls replica %s left: %w", owner, err)
		}
		if err := g.opts.Marks.SetMark(ctx, RoutineMark(owner), seqs[len(seqs)-1]); err != nil {
			return err
		}
	}
	return nil
}

// isParked reports whether request id waits here to run once approved.
func (g *Guard) isParked(id string) bool {
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	_, ok := g.parked[id]
	return ok
}

// peers is the part of the approval service that tells whether other
// replicas live (*approval.Service).
type peers interface {
	LivePeers(ctx context.Context) (bool, error)
}

// livePeers reports whether another replica may have calls in flight; if
// that cannot be told, it says yes (settling a live call would give it a
// second outcome).
func (g *Guard) livePeers(ctx context.Context) bool {
	p, ok := g.opts.Recovery.(peers)
	if !ok {
		return false
	}
	live, err := p.LivePeers(ctx)
	if err != nil {
		g.log.Warn("cannot tell whether other replicas live; taken as yes", "err", err)
		return true
	}
	return live
}
