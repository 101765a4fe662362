package guard

import (
	"context"

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
	return g.settleUnfinished(ctx, unfinished)
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
