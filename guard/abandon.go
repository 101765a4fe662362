package guard

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// A request Create stored (or may have: a commit cut short) but could not
// hand back, the database gone while it was raised, comes back with the
// error, only its ID set. Its caller was told the call failed and will
// never wait for it, and its replica lives, so no reaper ends it: abandon
// does, cancelled on the record, trying again until the database takes
// it, and then gives its usage shares back, once (their ids are set).

// abandonRetry is how abandon tries again while the database is away.
var abandonRetry = store.Backoff{First: 100 * time.Millisecond, Max: 5 * time.Second}

func (g *Guard) abandon(id string, cause error, counted ...*reservation) {
	if g.opts.Runs == nil {
		return
	}
	go func() {
		ctx := g.life // a shutdown leaves it to the next start, as any request
		err := abandonRetry.Do(ctx, func(err error) bool {
			return !errors.Is(err, approval.ErrNotPending) && !errors.Is(err, approval.ErrNotFound)
		}, func() error { return g.opts.Requests.Cancel(ctx, id, "its caller was told it failed: "+cause.Error()) })
		if errors.Is(err, approval.ErrNotFound) { // never stored
			for _, c := range counted {
				g.usage.release(c)
			}
			return
		}
		if err != nil && !errors.Is(err, approval.ErrNotPending) {
			g.log.Error("cannot end a request whose caller was told it failed; it stays pending", "auth_req_id", id, "err", err)
			return
		}
		// Approved before the cancellation landed: nobody runs it.
		if u, err := g.opts.Runs.Stored(ctx, id); err == nil && u.State == vocab.StateApproved && !u.Claimed &&
			g.opts.Runs.BeginExecution(ctx, id) == nil {
			rec := storedEntry(*u)
			rec.Kind, rec.Reason = vocab.KindCallFailed, "not run: its caller was told it failed: "+cause.Error()
			result, _ := json.Marshal(map[string]string{"error": rec.Reason})
			if err := g.opts.Runs.Finish(ctx, id, approval.Outcome{State: vocab.StateFailed, Result: result, Record: rec}); err != nil {
				g.log.Error("cannot store approval outcome", "auth_req_id", id, "err", err)
			}
		}
		for _, c := range counted {
			g.releaseUnrun(ctx, id, c)
		}
	}()
}
