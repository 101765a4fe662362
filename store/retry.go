package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Backoff is how this package tries again: after the nth failure it
// pauses a random time between half a bound and the bound, which doubles
// from First up to Max, so that processes that failed together do not
// meet again in step. Within, if set, bounds the whole: Do gives up
// rather than pause past it.
type Backoff struct {
	First, Max time.Duration
	Within     time.Duration
}

// txBackoff is InTx's: a conflict clears in milliseconds; entries
// another owner has yet to append (Retry) wait for its commit and one
// append, so Within leaves it seconds.
var txBackoff = Backoff{First: 2 * time.Millisecond, Max: 250 * time.Millisecond, Within: 5 * time.Second}

// Pause is the pause after the nth failure in a row (n >= 1).
func (b Backoff) Pause(n int) time.Duration {
	limit := b.First
	for i := 1; i < n && limit < b.Max; i++ {
		limit *= 2
	}
	limit = min(limit, b.Max)
	if limit < 2 {
		return limit
	}
	return limit/2 + rand.N(limit/2)
}

// Do runs fn until it returns nil or an error retry does not accept,
// and returns that. Past Within it returns fn's last error, wrapped to
// say how often it ran; when ctx ends during a pause, fn's last error
// joined with ctx's. fn's error always stays in what Do returns
// (errors.Is, errors.As).
func (b Backoff) Do(ctx context.Context, retry func(error) bool, fn func() error) error {
	start := time.Now()
	for n := 1; ; n++ {
		err := fn()
		if err == nil || !retry(err) {
			return err
		}
		pause := b.Pause(n)
		if b.Within > 0 && time.Since(start)+pause > b.Within {
			return fmt.Errorf("store: gave up after %d attempts in %v: %w", n, time.Since(start).Round(time.Millisecond), err)
		}
		if cerr := sleep(ctx, pause); cerr != nil {
			return fmt.Errorf("store: stopped retrying: %w", errors.Join(err, cerr))
		}
	}
}

// sleep waits d or until ctx ends, and then says which.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry marks err as passing: a transaction fn that returns it (or an
// error wrapping it) is rolled back and run again by InTx, after a pause,
// as after a conflict; if it still fails when InTx gives up, InTx returns
// it. Use it for a state another process is about to change (its audit
// entries for a request still waiting to be appended). Retry(nil) is nil.
func Retry(err error) error {
	if err == nil {
		return nil
	}
	return &retryError{err}
}

type retryError struct{ err error }

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Conflict reports whether err is one that InTx runs its transaction
// again for: a conflict with a concurrent transaction, or an error marked
// with Retry. Code that turns a failed statement into an error of its
// own must pass these through unchanged.
func Conflict(err error) bool {
	var r *retryError
	return retryable(err) || errors.As(err, &r)
}

// retryable reports whether err is PostgreSQL's serialization failure
// or deadlock, after which the whole transaction can run again.
func retryable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "40001" || pg.Code == "40P01")
}
