package ledger

import (
	"context"
	"testing"
)

func TestCallPaysOnceAndIsFoundByItsID(t *testing.T) {
	l, _ := openTest(t, testSeed)
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
}

func TestCallTransfersAfterTheRecordedMark(t *testing.T) {
	l, path := openTest(t, testSeed)
	ctx := context.Background()
	if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 1}); err != nil {
		t.Fatal(err) // no call id: not a call's transfer, never listed
	}
	for _, id := range []string{"entry:1", "entry:2", "request:x"} {
		if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 1, CallID: id}); err != nil {
			t.Fatal(err)
		}
	}
	mark, err := l.Recorded(ctx)
	if err != nil || mark != 0 {
		t.Fatalf("mark of a new ledger %d (%v)", mark, err)
	}
	all, err := l.CallTransfers(ctx, mark, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].CallID != "entry:1" || all[2].CallID != "request:x" || all[0].Seq >= all[1].Seq {
		t.Fatalf("call transfers %+v", all)
	}
	if err := l.SetRecorded(ctx, all[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := l.SetRecorded(ctx, all[0].Seq); err != nil { // never backwards
		t.Fatal(err)
	}
	l = reopen(t, path, testSeed)
	mark, _ = l.Recorded(ctx)
	rest, err := l.CallTransfers(ctx, mark, 10)
	if err != nil || len(rest) != 1 || rest[0].CallID != "request:x" {
		t.Fatalf("after the mark %d: %+v (%v)", mark, rest, err)
	}
	if last, _ := l.LastSeq(ctx); last != rest[0].Seq {
		t.Fatalf("last seq %d, want %d", last, rest[0].Seq)
	}
}

// A ledger from before call ids gets the column; its transfers stay, and
// the mark starts after them.
func TestMigrateAddsCallIDs(t *testing.T) {
	l, path := openTest(t, testSeed)
	ctx := context.Background()
	if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 5}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP INDEX ledger_transfers_call_id`, `DROP TABLE ledger_marks`, `ALTER TABLE ledger_transfers DROP COLUMN call_id`} {
		if _, err := l.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	l = reopen(t, path, testSeed)
	mark, err := l.Recorded(ctx)
	if err != nil || mark != 1 {
		t.Fatalf("mark after migration %d (%v), want 1", mark, err)
	}
	ts, err := l.Transfers(ctx, 10)
	if err != nil || len(ts) != 1 || ts[0].CallID != "" {
		t.Fatalf("old transfers %+v (%v)", ts, err)
	}
	if _, err := l.Transfer(ctx, TransferRequest{From: "operating", To: "Acme Supplies", Currency: "USD", Amount: 5, CallID: "entry:9"}); err != nil {
		t.Fatal(err)
	}
}
