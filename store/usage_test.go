package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

func openWindows(t *testing.T, db *store.DB) *store.UsageWindows {
	t.Helper()
	w, err := store.OpenUsageWindows(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// Sums cover the minutes a window asks for, across keys, and a release
// cancels its add exactly (0.1 + 0.2 - 0.1 - 0.2 is 0, not 5.5e-17, on
// PostgreSQL's NUMERIC).
func TestUsageWindowsSumAndRelease(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		w := openWindows(t, db)
		k, other := []byte("a\x00agent\x00transfer\x00EUR"), []byte("a\x00other\x00transfer\x00EUR")
		adds := []store.UsageAdd{{Key: k, Minute: 100, Calls: 1, Amount: 0.1}, {Key: k, Minute: 160, Calls: 1, Amount: 0.2},
			{Key: other, Minute: 160, Calls: 1, Amount: 50}}
		if err := w.Add(ctx, adds); err != nil {
			t.Fatal(err)
		}
		var got []store.UsageSum
		err := w.Decide(ctx, [][]byte{k}, []store.UsageWindow{{Key: k, Since: 0}, {Key: k, Since: 101}, {Key: []byte("none"), Since: 0}}, 0,
			func(s []store.UsageSum) ([]store.UsageAdd, error) { got = s; return nil, nil })
		if err != nil {
			t.Fatal(err)
		}
		want := []store.UsageSum{{Calls: 2, Amount: 0.1 + 0.2}, {Calls: 1, Amount: 0.2}, {}}
		if len(got) != 3 || got[0].Calls != 2 || got[1] != want[1] || got[2] != want[2] {
			t.Fatalf("sums %+v, want %+v", got, want)
		}
		if db.Dialect() == store.PostgreSQL && got[0].Amount != 0.3 {
			t.Fatalf("NUMERIC sum of 0.1 and 0.2 is %v, want 0.3", got[0].Amount)
		}
		for i := range adds[:2] {
			adds[i].Calls, adds[i].Amount = -adds[i].Calls, -adds[i].Amount
		}
		if err := w.Add(ctx, adds[:2]); err != nil {
			t.Fatal(err)
		}
		w.Decide(ctx, nil, []store.UsageWindow{{Key: k, Since: 0}}, 0, func(s []store.UsageSum) ([]store.UsageAdd, error) { got = s; return nil, nil })
		if got[0].Calls != 0 || (db.Dialect() == store.PostgreSQL && got[0].Amount != 0) {
			t.Fatalf("after release: %+v", got[0])
		}
	})
}

// What decide refuses with an error is not added; rows past the horizon
// of a written key are dropped.
func TestUsageWindowsDecideErrorAddsNothingAndHorizonForgets(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		w := openWindows(t, db)
		k := []byte("t\x00transfer\x00EUR")
		boom := errors.New("boom")
		err := w.Decide(ctx, [][]byte{k}, nil, 0, func([]store.UsageSum) ([]store.UsageAdd, error) {
			return []store.UsageAdd{{Key: k, Minute: 1, Calls: 1, Amount: 5}}, boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err %v, want boom", err)
		}
		w.Add(ctx, []store.UsageAdd{{Key: k, Minute: 1, Calls: 1, Amount: 5}})
		if err := w.Decide(ctx, [][]byte{k}, nil, 10, func([]store.UsageSum) ([]store.UsageAdd, error) {
			return []store.UsageAdd{{Key: k, Minute: 10, Calls: 1, Amount: 7}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		var n int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_minutes`).Scan(&n)
		if n != 1 {
			t.Fatalf("%d rows, want only minute 10's", n)
		}
	})
}

// Two replicas deciding at once on the same key, 16 goroutines each, admit
// no more than the limit between them: each decision sees every one
// committed before it.
func TestUsageWindowsSplitAcrossReplicasCannotPassTheLimit(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, a, b *store.DB) {
		ctx := context.Background()
		wa, wb := openWindows(t, a), openWindows(t, b)
		k := []byte("p\x00salami\x00transfer\x00EUR\x00acme")
		const limit, each, perReplica = 100.0, 7.0, 16
		var wg sync.WaitGroup
		for _, w := range []*store.UsageWindows{wa, wb, wa, wb} {
			for range perReplica / 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := w.Decide(ctx, [][]byte{k}, []store.UsageWindow{{Key: k, Since: 0}}, 0, func(s []store.UsageSum) ([]store.UsageAdd, error) {
						if s[0].Amount+each > limit {
							return nil, nil
						}
						return []store.UsageAdd{{Key: k, Minute: 5, Calls: 1, Amount: each}}, nil
					})
					if err != nil {
						t.Error(err)
						return
					}
				}()
			}
		}
		wg.Wait()
		var calls int64
		var amount float64
		if err := a.QueryRowContext(ctx, `SELECT calls, amount FROM usage_minutes`).Scan(&calls, &amount); err != nil {
			t.Fatal(err)
		}
		// 14 calls of 7 fit under 100; the 15th would pass it.
		if amount > limit || calls != 14 {
			t.Fatalf("admitted %d calls moving %v; want exactly 14 under the limit %v", calls, amount, limit)
		}
	})
}

// A call's share held by two replicas (its owner and a reaper that
// rebuilt it), given back by both at once and again later, is given back
// once; the mark is forgotten past the horizon with its minute.
func TestUsageWindowsReleaseOnceGivesAShareBackOnce(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, a, b *store.DB) {
		ctx := context.Background()
		wa, wb := openWindows(t, a), openWindows(t, b)
		k := []byte("a\x00agent\x00transfer\x00EUR")
		if err := wa.Add(ctx, []store.UsageAdd{{Key: k, Minute: 100, Calls: 3, Amount: 30}}); err != nil {
			t.Fatal(err)
		}
		back := []store.UsageAdd{{Key: k, Minute: 100, Calls: -1, Amount: -10}}
		var wg sync.WaitGroup
		var mu sync.Mutex
		released := 0
		for i := range 8 {
			w := []*store.UsageWindows{wa, wb}[i%2]
			wg.Go(func() {
				ok, err := w.ReleaseOnce(ctx, "request:r1", 100, back, 0)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					released++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ok, err := wb.ReleaseOnce(ctx, "request:r1", 100, back, 0); ok || err != nil {
			t.Fatalf("released again later: %v %v", ok, err)
		}
		var calls int64
		var amount float64
		if err := a.QueryRowContext(ctx, `SELECT calls, amount FROM usage_minutes WHERE minute = 100`).Scan(&calls, &amount); err != nil {
			t.Fatal(err)
		}
		if released != 1 || calls != 2 || amount != 20 {
			t.Fatalf("released %d times; %d calls moving %v left, want once and 2 moving 20", released, calls, amount)
		}
		// A share known to have counted somewhere in minutes 98 to 101 is
		// taken from the earliest that holds it all (100, not 99, which
		// holds less); one that no row holds is not given back, and no row
		// goes below zero.
		if err := wa.Add(ctx, []store.UsageAdd{{Key: k, Minute: 99, Calls: 1, Amount: 5}}); err != nil {
			t.Fatal(err)
		}
		if ok, err := wb.ReleaseOnce(ctx, "request:r2", 98, []store.UsageAdd{{Key: k, Minute: 101, Calls: -1, Amount: -10}}, 0); !ok || err != nil {
			t.Fatalf("release of r2: %v %v", ok, err)
		}
		if ok, err := wb.ReleaseOnce(ctx, "request:r3", 98, []store.UsageAdd{{Key: k, Minute: 101, Calls: -1, Amount: -50}}, 0); !ok || err != nil {
			t.Fatalf("release of r3: %v %v", ok, err)
		}
		rows := map[int64][2]float64{}
		r, err := a.QueryContext(ctx, `SELECT minute, calls, amount FROM usage_minutes`)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var m int64
			var c, am float64
			if err := r.Scan(&m, &c, &am); err != nil {
				t.Fatal(err)
			}
			rows[m] = [2]float64{c, am}
		}
		r.Close()
		if len(rows) != 2 || rows[99] != [2]float64{1, 5} || rows[100] != [2]float64{1, 10} {
			t.Fatalf("rows after giving back within a span: %v, want minute 99 untouched and 100 holding 1 call moving 10", rows)
		}
		// Another call's release past the horizon forgets r1's mark.
		if ok, err := wa.ReleaseOnce(ctx, "entry:7", 200, nil, 150); !ok || err != nil {
			t.Fatalf("release of another call: %v %v", ok, err)
		}
		var n int
		a.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_released WHERE id = 'request:r1'`).Scan(&n)
		if n != 0 {
			t.Fatal("a release mark outlived its minute's horizon")
		}
	})
}

// One decision on a payee's windows as a usage-reading call makes it
// (four keys read, two locked, four rows written), one goroutine; SQLite
// beside PostgreSQL on the same machine.
func BenchmarkUsageWindowsDecide(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.PostgreSQL} {
		b.Run(d.String(), func(b *testing.B) {
			target := filepath.Join(b.TempDir(), store.FileName)
			if d == store.PostgreSQL {
				target = pgtest.URL(b)
			}
			w, err := store.OpenUsageWindows(context.Background(), storetest.Connect(b, target))
			if err != nil {
				b.Fatal(err)
			}
			keys := [][]byte{[]byte("c\x00bot\x00transfer"), []byte("a\x00bot\x00transfer\x00EUR"), []byte("p\x00bot\x00transfer\x00EUR\x00acme"), []byte("t\x00transfer\x00EUR")}
			var windows []store.UsageWindow
			for _, k := range keys {
				windows = append(windows, store.UsageWindow{Key: k, Since: 1000})
			}
			b.ResetTimer()
			for i := range b.N {
				m := int64(2000 + i/100)
				err := w.Decide(context.Background(), keys[1:3], windows, m-1440, func([]store.UsageSum) ([]store.UsageAdd, error) {
					adds := make([]store.UsageAdd, len(keys))
					for j, k := range keys {
						adds[j] = store.UsageAdd{Key: k, Minute: m, Calls: 1, Amount: 12.5}
					}
					return adds, nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The amounts' own connection ended by the database (a quiet replica's
// idle_session_timeout, a restart) is replaced: the next row is kept, not
// refused with "connection is already closed" for as long as the process
// runs.
func TestAmountsOutliveTheirConnectionEnding(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, pgtest.URL(t))
	a, err := store.OpenAmounts(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	row := store.Amount{Tool: "transfer", ArgsSHA256: strings.Repeat("a", 64), Amount: 5, Currency: "USD", Counterparty: "acme", At: time.Now()}
	if err := a.KeepAmount(ctx, row); err != nil {
		t.Fatal(err)
	}
	var ended int
	if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&ended); err != nil || ended == 0 {
		t.Fatalf("ending the other connections: %d ended, %v", ended, err)
	}
	for i := range 3 {
		row.Amount = float64(6 + i)
		if err := a.KeepAmount(ctx, row); err != nil {
			t.Fatalf("keep after the connection ended (%d): %v", i, err)
		}
	}
	got, err := a.AmountsSince(ctx, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if r := got[store.AmountKey(row.Tool, row.ArgsSHA256)]; r.Amount != 8 {
		t.Fatalf("kept %+v, want amount 8", r)
	}
}
