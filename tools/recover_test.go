package tools

import (
	"context"
	"testing"
)

// The transfer tool can say, after a crash, whether a call paid: by the
// call id its row carries. Deploy and secrets cannot, and say so by having
// no Recover.
func TestTransferRecoversByCallID(t *testing.T) {
	r, _ := registry(t, shipped(t))
	ctx := context.Background()
	tr := lookup(t, r, "transfer")
	call, err := tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 10.0, "currency": "USD"})
	if err != nil {
		t.Fatal(err)
	}
	call.ID = "request:abc"
	if res, done, err := tr.Recover(ctx, call); err != nil || done || res != nil {
		t.Fatalf("before it ran: %v %v %v", res, done, err)
	}
	ran, err := tr.Run(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	got, done, err := tr.Recover(ctx, call)
	if err != nil || !done {
		t.Fatalf("after it ran: done %v err %v", done, err)
	}
	a, b := ran.Record.(map[string]any), got.Record.(map[string]any)
	if a["transfer_id"] != b["transfer_id"] || b["call_id"] != "request:abc" || b["amount"] != "10.00" {
		t.Fatalf("recovered %v, ran %v", b, a)
	}
	// Running the same call again pays nothing more.
	again, err := tr.Run(ctx, call)
	if err != nil || again.Record.(map[string]any)["transfer_id"] != a["transfer_id"] {
		t.Fatalf("second run: %v %v", again, err)
	}
	for _, name := range []string{"deploy", "read_secret"} {
		if s := lookup(t, r, name); s.Recover != nil {
			t.Errorf("%s claims it can tell a crashed call's outcome", name)
		}
	}
}
