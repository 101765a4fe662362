package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/google/uuid"
)

var testSeed = config.Ledger{
	Accounts: []config.Account{
		{ID: "operating", Name: "Operating", Currency: "USD", Balance: "1000.00"},
		{ID: "yen", Name: "Tokyo", Currency: "JPY", Balance: "500000"},
	},
	Counterparties: []config.Counterparty{{Name: "Acme Supplies", Known: true}},
}

func openTest(t *testing.T, seed config.Ledger) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), store.FileName)
	return reopen(t, path, seed), path
}

// dialects runs fn on a SQLite file and on a database of its own on a
// real PostgreSQL (pgtest), each a subtest; target is the database.
func dialects(t *testing.T, fn func(t *testing.T, target string)) {
	if storetest.Dialect() == store.SQLite {
		t.Run(store.SQLite.String(), func(t *testing.T) { fn(t, filepath.Join(t.TempDir(), store.FileName)) })
	}
	t.Run(store.PostgreSQL.String(), func(t *testing.T) { fn(t, pgtest.URL(t)) })
}

func reopen(t *testing.T, path string, seed config.Ledger) *Ledger {
	t.Helper()
	db := storetest.Connect(t, path)
	l, err := Open(context.Background(), db, seed)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func balance(t *testing.T, l *Ledger, id string) int64 {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

func received(t *testing.T, l *Ledger, currency string) int64 {
	t.Helper()
	var sum int64
	if err := l.db.QueryRow(`SELECT COALESCE(SUM(amount), 0) FROM ledger_receipts WHERE currency = ?`, currency).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestConcurrentTransfersNeverOverdraw(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		ctx := context.Background()
		const workers = 50
		const amount = 3000 // USD 30.00; 1000.00 covers 33 of the 50
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = l.Transfer(ctx, TransferRequest{
					From: "operating", To: fmt.Sprintf("Payee %d", i%7), Currency: "USD", Amount: amount,
				})
			}()
		}
		wg.Wait()
		paid := 0
		for _, err := range errs {
			switch {
			case err == nil:
				paid++
			case errors.Is(err, ErrInsufficientFunds):
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if paid != 33 {
			t.Errorf("%d transfers succeeded, want 33 (100000 / 3000)", paid)
		}
		bal := balance(t, l, "operating")
		if bal < 0 || bal != 100000-int64(paid)*amount {
			t.Errorf("balance %d, want %d", bal, 100000-int64(paid)*amount)
		}
		if got := bal + received(t, l, "USD"); got != 100000 {
			t.Errorf("balances + receipts = %d, want 100000 (money created or lost)", got)
		}
		ts, err := l.Transfers(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != paid {
			t.Errorf("%d transfers recorded, want %d", len(ts), paid)
		}
		cps, err := l.Counterparties(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) != 8 { // Acme + Payee 0..6
			t.Errorf("%d counterparties, want 8: %+v", len(cps), cps)
		}
	})
}

func TestIdempotentRetryPaysOnce(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		ctx := context.Background()
		req := TransferRequest{From: "operating", To: "Vendor X", Currency: "USD", Amount: 25000, Memo: "inv 7", IdempotencyKey: "k-1"}
		first, err := l.Transfer(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || !first.NewPayee {
			t.Errorf("first transfer: replayed=%v newPayee=%v", first.Replayed, first.NewPayee)
		}
		// Concurrent retries, as a client that times out and retries would send.
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				again, err := l.Transfer(ctx, req)
				if err != nil {
					t.Errorf("retry: %v", err)
					return
				}
				if !again.Replayed || again.ID != first.ID {
					t.Errorf("retry returned %+v, want replay of %s", again, first.ID)
				}
			}()
		}
		wg.Wait()
		if got := balance(t, l, "operating"); got != 100000-25000 {
			t.Errorf("balance %d after retries, want %d", got, 100000-25000)
		}
		diff := req
		diff.Amount = 25001
		if _, err := l.Transfer(ctx, diff); !errors.Is(err, ErrIdempotencyConflict) {
			t.Errorf("same key, different amount: err %v, want ErrIdempotencyConflict", err)
		}
		diff = req
		diff.To = "Vendor Y"
		if _, err := l.Transfer(ctx, diff); !errors.Is(err, ErrIdempotencyConflict) {
			t.Errorf("same key, different payee: err %v, want ErrIdempotencyConflict", err)
		}
		if got := balance(t, l, "operating"); got != 75000 {
			t.Errorf("balance %d after conflicts, want 75000", got)
		}
	})
}

func TestTransferRefusals(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		ctx := context.Background()
		tests := []struct {
			name string
			req  TransferRequest
			want error
		}{
			{"unknown account", TransferRequest{From: "nope", To: "A", Currency: "USD", Amount: 1}, ErrUnknownAccount},
			{"currency mismatch", TransferRequest{From: "operating", To: "A", Currency: "EUR", Amount: 1}, ErrCurrencyMismatch},
			{"overdraw", TransferRequest{From: "operating", To: "A", Currency: "USD", Amount: 100001}, ErrInsufficientFunds},
			{"zero", TransferRequest{From: "operating", To: "A", Currency: "USD", Amount: 0}, ErrAmountNotPositive},
			{"control char payee", TransferRequest{From: "operating", To: "A\nB", Currency: "USD", Amount: 1}, ErrInvalidName},
			{"bidi payee", TransferRequest{From: "operating", To: "A\u202eB", Currency: "USD", Amount: 1}, ErrInvalidName},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := l.Transfer(ctx, tc.req); !errors.Is(err, tc.want) {
					t.Errorf("err %v, want %v", err, tc.want)
				}
			})
		}
		if got := balance(t, l, "operating"); got != 100000 {
			t.Errorf("balance %d after refusals, want 100000", got)
		}
		if cps, _ := l.Counterparties(ctx); len(cps) != 1 {
			t.Errorf("refused transfers created counterparties: %+v", cps)
		}
	})
}

func TestPayeeMatchesKnownCounterpartyIgnoringCaseAndSpace(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		tr, err := l.Transfer(context.Background(), TransferRequest{From: "operating", To: "  acme   SUPPLIES ", Currency: "USD", Amount: 100})
		if err != nil {
			t.Fatal(err)
		}
		if tr.NewPayee || tr.To != "Acme Supplies" {
			t.Errorf("paid %q newPayee=%v, want the known Acme Supplies", tr.To, tr.NewPayee)
		}
	})
}

func TestSeedTwiceKeepsBalances(t *testing.T) {
	l, path := openTest(t, testSeed)
	ctx := context.Background()
	if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Vendor X", Currency: "USD", Amount: 12345}); err != nil {
		t.Fatal(err)
	}
	before, _, _ := l.Counterparty(ctx, "Vendor X")

	seed := testSeed
	seed.Counterparties = append([]config.Counterparty{}, testSeed.Counterparties...)
	seed.Counterparties = append(seed.Counterparties, config.Counterparty{Name: "Vendor X", Known: true})
	l2 := reopen(t, path, seed)
	if got := balance(t, l2, "operating"); got != 100000-12345 {
		t.Errorf("balance after reseed %d, want %d", got, 100000-12345)
	}
	after, ok, err := l2.Counterparty(ctx, "Vendor X")
	if err != nil || !ok {
		t.Fatalf("Vendor X after reseed: ok=%v err=%v", ok, err)
	}
	if !after.Known || !after.FirstSeen.Equal(before.FirstSeen) {
		t.Errorf("reseed: known=%v first_seen %v, want known and unchanged %v", after.Known, after.FirstSeen, before.FirstSeen)
	}

	changed := testSeed
	changed.Accounts = []config.Account{{ID: "operating", Name: "Operating", Currency: "EUR", Balance: "1000.00"}}
	db := storetest.Connect(t, path)
	if _, err := Open(ctx, db, changed); err == nil {
		t.Error("reseeding an account in another currency succeeded, want an error")
	}
}

func TestSeedRefusesBadBalance(t *testing.T) {
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	bad := config.Ledger{Accounts: []config.Account{{ID: "a", Currency: "JPY", Balance: "10.5"}}}
	if _, err := Open(context.Background(), db, bad); !errors.Is(err, ErrTooManyDecimals) {
		t.Errorf("err %v, want ErrTooManyDecimals", err)
	}
}

// BenchmarkTransfer measures one committed transfer (a durable SQLite
// write transaction with synchronous=FULL).
func BenchmarkTransfer(b *testing.B) {
	path := filepath.Join(b.TempDir(), store.FileName)
	db, err := store.Connect(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	l, err := Open(context.Background(), db, config.Ledger{Accounts: []config.Account{
		{ID: "operating", Currency: "USD", Balance: "1000000000.00"}}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := l.Transfer(context.Background(), TransferRequest{From: "operating", To: "Vendor X", Currency: "USD", Amount: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransferContended pays from one account on PostgreSQL from 16
// goroutines: each transfer holds the account's row lock until its
// commit, so ns/op is about the time each holds it (the round trips
// under the lock, and the commit).
func BenchmarkTransferContended(b *testing.B) {
	db := storetest.Connect(b, pgtest.URL(b))
	l, err := Open(context.Background(), db, config.Ledger{Accounts: []config.Account{
		{ID: "operating", Currency: "USD", Balance: "1000000000.00"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Transfer(context.Background(), TransferRequest{From: "operating", To: "Vendor X", Currency: "USD", Amount: 1, CallID: uuid.NewString()}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
