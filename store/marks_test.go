package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

func TestMarksOnlyMoveForward(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		m := store.Marks{DB: db}
		if _, ok, err := m.Mark(ctx, "x"); err != nil || ok {
			t.Fatalf("unset mark: ok %v err %v", ok, err)
		}
		for _, v := range []int64{5, 3, 9, 1 << 40} {
			if err := m.SetMark(ctx, "x", v); err != nil {
				t.Fatal(err)
			}
		}
		if v, ok, err := m.Mark(ctx, "x"); err != nil || !ok || v != 1<<40 {
			t.Fatalf("mark %d ok %v err %v, want %d", v, ok, err, int64(1<<40))
		}
	})
}

// A call's row keeps the latest time its arguments were decided at, and
// the amounts read back are the ones kept, on both engines.
func TestAmountsKeepTheLatestRow(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		a, err := store.OpenAmounts(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		later := time.Unix(1_900_000_000, 0)
		for _, r := range []store.Amount{
			{Tool: "transfer", ArgsSHA256: "ab", Amount: 12.5, Currency: "USD", Counterparty: "Acme", At: later},
			{Tool: "transfer", ArgsSHA256: "ab", Amount: 0.1, Currency: "USD", Counterparty: "Acme", At: later.Add(-time.Hour)},
			{Tool: "transfer", ArgsSHA256: "cd", Amount: 7, Currency: "EUR", Counterparty: "Old", At: later.Add(-48 * time.Hour)},
		} {
			if err := a.KeepAmount(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		got, err := a.AmountsSince(ctx, later.Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		r, ok := got[store.AmountKey("transfer", "ab")]
		if len(got) != 1 || !ok || r.Amount != 0.1 || !r.At.Equal(later) {
			t.Fatalf("amounts since a day before: %+v", got)
		}
		if err := a.ForgetAmounts(ctx, later.Add(-24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if all, err := a.AmountsSince(ctx, time.Unix(0, 0)); err != nil || len(all) != 1 {
			t.Fatalf("after forgetting: %v (%v)", all, err)
		}
	})
}
