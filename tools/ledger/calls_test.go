package ledger

import (
	"context"
	"testing"
)

func TestCallPaysOnceAndIsFoundByItsID(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		ctx := context.Background()
		req := TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 1250, CallID: "entry:7"}
		if _, ok, err := l.TransferByCall(ctx, req.CallID); err != nil || ok {
			t.Fatalf("before paying: ok %v err %v", ok, err)
		}
		first, err := l.Transfer(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := l.Transfer(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || again.Replayed || again.CallID != "entry:7" {
			t.Fatalf("paying again under the same call id: %+v, first %+v", again, first)
		}
		if got := balance(t, l, "operating"); got != 100000-1250 {
			t.Fatalf("balance %d: the call paid twice", got)
		}
		found, ok, err := l.TransferByCall(ctx, "entry:7")
		if err != nil || !ok || found.ID != first.ID || found.Amount != 1250 {
			t.Fatalf("TransferByCall: %+v ok %v err %v", found, ok, err)
		}
	})
}

// A ledger from before call ids (and schema_version) gets the column;
// its transfers stay.
func TestMigrateAddsCallIDs(t *testing.T) {
	dialects(t, func(t *testing.T, target string) {
		l := reopen(t, target, testSeed)
		ctx := context.Background()
		if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 5}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`DROP INDEX ledger_transfers_call_id`, `ALTER TABLE ledger_transfers DROP COLUMN call_id`,
			`DROP TABLE schema_version`} {
			if _, err := l.db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		l = reopen(t, target, testSeed)
		ts, err := l.Transfers(ctx, 0, 10)
		if err != nil || len(ts) != 1 || ts[0].CallID != "" {
			t.Fatalf("old transfers %+v (%v)", ts, err)
		}
		if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 5, CallID: "entry:9"}); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := l.TransferByCall(ctx, "entry:9"); err != nil || !ok {
			t.Fatalf("after migration: ok %v err %v", ok, err)
		}
	})
}
