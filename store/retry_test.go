package store_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

var errPassing = errors.New("passing")

func passing(err error) bool { return errors.Is(err, errPassing) }

// Do runs fn again while it fails with an error the predicate accepts,
// and stops at the first success.
func TestBackoffRetriesUntilSuccess(t *testing.T) {
	b := store.Backoff{First: time.Microsecond, Max: 10 * time.Microsecond, Within: wait}
	runs := 0
	err := b.Do(context.Background(), passing, func() error {
		if runs++; runs < 4 {
			return errPassing
		}
		return nil
	})
	if err != nil || runs != 4 {
		t.Fatalf("Do = %v after %d runs, want nil after 4", err, runs)
	}
}

// An error the predicate refuses ends Do at once, returned as it is.
func TestBackoffReturnsOtherErrorsAtOnce(t *testing.T) {
	b := store.Backoff{First: time.Microsecond, Max: time.Microsecond, Within: wait}
	mine := errors.New("mine")
	runs := 0
	err := b.Do(context.Background(), passing, func() error { runs++; return mine })
	if err != mine || runs != 1 {
		t.Fatalf("Do = %v after %d runs, want fn's own error after 1", err, runs)
	}
}

// Past Within, Do gives up and returns fn's last error, still matchable.
func TestBackoffGivesUpKeepingTheError(t *testing.T) {
	b := store.Backoff{First: time.Millisecond, Max: 4 * time.Millisecond, Within: 30 * time.Millisecond}
	runs := 0
	err := b.Do(context.Background(), passing, func() error {
		runs++
		return errors.Join(errPassing, &runError{n: runs})
	})
	var w *runError
	if !errors.Is(err, errPassing) || !errors.As(err, &w) || w.n != runs {
		t.Fatalf("Do = %v: want the last run's error (run %d) kept", err, runs)
	}
	if runs < 2 {
		t.Errorf("%d runs: it gave up without retrying", runs)
	}
}

// runError says which run failed.
type runError struct{ n int }

func (e *runError) Error() string { return "run failed" }

// A context that ends during a pause ends Do with fn's error and the
// context's.
func TestBackoffStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := store.Backoff{First: time.Hour, Max: time.Hour}
	err := b.Do(ctx, passing, func() error { cancel(); return errPassing })
	if !errors.Is(err, errPassing) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want fn's error and context.Canceled", err)
	}
}

// Each pause is between half its bound and the bound, which doubles from
// First and stops at Max.
func TestBackoffPauseDoublesUpToMax(t *testing.T) {
	b := store.Backoff{First: 2 * time.Millisecond, Max: 250 * time.Millisecond}
	bound := b.First
	for n := 1; n <= 12; n++ {
		for range 50 {
			if p := b.Pause(n); p < bound/2 || p > bound {
				t.Fatalf("pause %d = %v, want within [%v, %v]", n, p, bound/2, bound)
			}
		}
		bound = min(2*bound, b.Max)
	}
}

// A transaction whose fn returns an error marked with Retry is rolled
// back and run again, on both dialects; Conflict sees the mark through
// wrapping.
func TestInTxRerunsWhatRetryMarks(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		exec(t, db, `CREATE TABLE n (v INTEGER NOT NULL)`)
		ctx := context.Background()
		ahead := errors.New("entries ahead")
		runs := 0
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			runs++
			if _, err := tx.ExecContext(ctx, `INSERT INTO n (v) VALUES (?)`, runs); err != nil {
				return err
			}
			if runs < 3 {
				return fmtWrap(store.Retry(ahead))
			}
			return nil
		})
		if err != nil || runs != 3 {
			t.Fatalf("InTx = %v after %d runs, want nil after 3", err, runs)
		}
		if n := count(t, db, "n"); n != 1 {
			t.Errorf("%d rows: the runs marked Retry were not rolled back", n)
		}
		if db.Retries() != 2 {
			t.Errorf("retries %d, want 2", db.Retries())
		}
		if !store.Conflict(fmtWrap(store.Retry(ahead))) || store.Conflict(ahead) || store.Retry(nil) != nil {
			t.Error("Conflict does not tell a Retry-marked error from another")
		}
		if !errors.Is(store.Retry(ahead), ahead) {
			t.Error("Retry hides the error it marks")
		}
	})
}

func fmtWrap(err error) error { return errors.Join(errors.New("enqueue"), err) }
