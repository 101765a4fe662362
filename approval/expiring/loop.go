package expiring

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/countersign/countersign/store"
)

// Sweeper is what a round of the expiry loop does on the approval
// service (*approval.Service's sweeper).
type Sweeper interface {
	// Next is when the earliest pending request expires; false when
	// none is pending.
	Next(ctx context.Context) (time.Time, bool, error)
	// Leading reports whether this replica expires requests (it leads
	// the sweeps); a waiter elsewhere expires its own.
	Leading() bool
	// ExpireDue expires the pending requests whose time is up and
	// appends their entries; it stops at the first it cannot write.
	ExpireDue(ctx context.Context) error
	// Announce announces the requests that entered their Lead, and says
	// how long until the next one does.
	Announce(ctx context.Context) (time.Duration, error)
	// FlushQueued appends the entries a failed append or another
	// process left behind, so a recovered log catches up unasked.
	FlushQueued(ctx context.Context) error
}

// Backoff spaces the loop's rounds while what it must write cannot be
// written (a full disk): one round, and one log line, per step, instead
// of a round each time a request changes.
var Backoff = store.Backoff{First: 100 * time.Millisecond, Max: 30 * time.Second}

// Loop expires pending requests whose time is up, whether or not anyone
// waits or looks, announces expiring ones and appends the outbox, until
// Stop closes. Wake wakes it early at a change; while a round fails it
// backs off and only its timer wakes it.
type Loop struct {
	Sweeper Sweeper
	Now     func() time.Time
	Wake    func() <-chan struct{}
	Stop    <-chan struct{}
	Log     *slog.Logger
}

// Run runs the loop until Stop closes.
func (l Loop) Run() {
	ctx := context.Background()
	failed := 0 // rounds in a row that could not write
	for {
		wait, err := l.round(ctx)
		wake := l.Wake()
		switch {
		case err != nil:
			failed++
			wait, wake = Backoff.Pause(failed), nil
			l.Log.Error("approval: expiry loop cannot write; backing off", "err", err, "failures", failed, "retry_in", wait.Round(time.Millisecond))
		case failed > 0:
			l.Log.Info("approval: expiry loop writes again", "after_failures", failed)
			failed = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-l.Stop:
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// round does one round's work, and returns how long until the next and
// the first write it could not make.
func (l Loop) round(ctx context.Context) (time.Duration, error) {
	next, ok, err := l.Sweeper.Next(ctx)
	if err != nil {
		l.Log.Error("approval: expiry loop", "err", err)
	}
	wait := time.Second
	if ok {
		wait = min(wait, max(next.Sub(l.Now()), 0))
	}
	if wait == 0 && !l.Sweeper.Leading() {
		wait = time.Second
	}
	if wait == 0 {
		if err := l.Sweeper.ExpireDue(ctx); err != nil {
			return wait, err
		}
		wait = 50 * time.Millisecond
	}
	d, err := l.Sweeper.Announce(ctx)
	if d < wait {
		wait = max(d, 10*time.Millisecond)
	}
	if err != nil {
		return wait, err
	}
	return wait, l.Sweeper.FlushQueued(ctx)
}

// Next is when the earliest pending request expires; false when none is
// pending.
func Next(ctx context.Context, db DB) (time.Time, bool, error) {
	var next sql.NullInt64
	rows, err := db.QueryContext(ctx, `SELECT expires_at FROM approval_requests WHERE state = 'pending' ORDER BY expires_at LIMIT 1`)
	if err != nil {
		return time.Time{}, false, err
	}
	defer rows.Close()
	if rows.Next() {
		err = rows.Scan(&next)
	}
	return time.Unix(next.Int64, 0), next.Valid, errors.Join(err, rows.Err())
}

// Past returns the pending requests whose time is up at now.
func Past(ctx context.Context, db DB, now time.Time) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= ?`, now.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
