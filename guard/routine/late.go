package routine

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// Late records the outcomes of routine calls that could not be recorded
// when the calls ended (the disk was full), and stores those of approved
// requests' runs (KeepFinish): the running process records each as soon
// as the log takes it, instead of leaving it to the next start. Until then the call stays open in Calls, so the mark stays
// before it and a start after a crash settles it as any open call.
type Late struct {
	Calls  *Calls
	Append func(context.Context, audit.Entry) (audit.Entry, error)
	// Since reads the log (nil: not read); before appending an outcome
	// Late looks for it there, since an append that failed at its commit
	// may have been stored all the same.
	Since  func(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
	Logger *slog.Logger

	mu       sync.Mutex
	recs     map[int64]audit.Entry                  // by the seq of the call's call.allowed
	finishes map[string]func(context.Context) error // stores a request's outcome, by request id
	kick     chan struct{}
}

// NoteLate is added to the reason of an outcome recorded late.
const NoteLate = "recorded late: the audit log could not take it when the call ended"

// lateBackoff spaces the attempts while the log still cannot be written;
// each step logs one line.
var lateBackoff = store.Backoff{First: 100 * time.Millisecond, Max: 30 * time.Second}

// Keep holds rec, the outcome entry of the routine call allowed at
// rec.ArgsSeq that could not be appended, for Run to record.
func (l *Late) Keep(rec audit.Entry) {
	l.mu.Lock()
	if l.recs == nil {
		l.recs = map[int64]audit.Entry{}
	}
	l.recs[rec.ArgsSeq] = rec
	kick := l.kicker()
	l.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// KeepFinish holds finish, which stores the outcome of request id's run
// that could not be stored when it ended, for Run to call until it
// succeeds.
func (l *Late) KeepFinish(id string, finish func(context.Context) error) {
	l.mu.Lock()
	if l.finishes == nil {
		l.finishes = map[string]func(context.Context) error{}
	}
	l.finishes[id] = finish
	kick := l.kicker()
	l.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// kicker is the channel that wakes Run; l.mu is held.
func (l *Late) kicker() chan struct{} {
	if l.kick == nil {
		l.kick = make(chan struct{}, 1)
	}
	return l.kick
}

// Pending is how many outcomes wait to be recorded.
func (l *Late) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs) + len(l.finishes)
}

// Run records what Keep holds whenever there is some, backing off while
// the log cannot take it, until ctx ends.
func (l *Late) Run(ctx context.Context) {
	l.mu.Lock()
	kick := l.kicker()
	l.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		for failed := 0; ; {
			err := l.recordAll(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			failed++
			pause := lateBackoff.Pause(failed)
			l.Logger.Error("cannot record the outcomes of routine calls yet; backing off", "err", err,
				"outcomes", l.Pending(), "failures", failed, "retry_in", pause.Round(time.Millisecond))
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// recordAll records each outcome held, oldest call first, and stops at
// the first it cannot.
func (l *Late) recordAll(ctx context.Context) error {
	for _, seq := range heldKeys(&l.mu, l.recs) {
		l.mu.Lock()
		rec := l.recs[seq]
		l.mu.Unlock()
		stored, err := l.stored(ctx, seq)
		if err != nil {
			return err
		}
		if stored == 0 {
			rec.Reason = strings.TrimPrefix(rec.Reason+"; "+NoteLate, "; ")
			e, err := l.Append(ctx, rec)
			if err != nil {
				return err
			}
			stored = e.Seq
			l.Logger.Warn("recorded the outcome of a routine call the log could not take when it ended",
				"tool", rec.Tool, "allowed_seq", seq, "kind", rec.Kind, "seq", stored)
		}
		l.mu.Lock()
		delete(l.recs, seq)
		l.mu.Unlock()
		l.Calls.End(seq, stored)
	}
	for _, id := range heldKeys(&l.mu, l.finishes) {
		l.mu.Lock()
		finish := l.finishes[id]
		l.mu.Unlock()
		if err := finish(ctx); err != nil {
			return err
		}
		l.Logger.Warn("stored the outcome of an approved request's run that could not be stored when it ended", "auth_req_id", id)
		l.mu.Lock()
		delete(l.finishes, id)
		l.mu.Unlock()
	}
	return nil
}

// stored is the seq of the outcome of the call allowed at allowed that
// the log holds, or 0.
func (l *Late) stored(ctx context.Context, allowed int64) (int64, error) {
	if l.Since == nil {
		return 0, nil
	}
	for seq := allowed; ; {
		page, err := l.Since(ctx, seq, 1000)
		if err != nil || len(page) == 0 {
			return 0, err
		}
		for _, e := range page {
			seq = e.Seq
			switch e.Kind {
			case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
				if e.ArgsSeq == allowed && e.RequestID == "" {
					return e.Seq, nil
				}
			}
		}
	}
}

// heldKeys returns m's keys in order, read under mu: what is held now,
// so that recording each (which takes mu again) may change m.
func heldKeys[K cmp.Ordered, V any](mu *sync.Mutex, m map[K]V) []K {
	mu.Lock()
	defer mu.Unlock()
	return slices.Sorted(maps.Keys(m))
}
