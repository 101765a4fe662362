package main

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// A replica killed while a block-mode call waits on it: the surviving
// replica, while it serves, finds it dead after the grace and records
// its request cancelled ("server restarted") once; the log verifies.
func TestKilledReplicasWaitingCallIsCancelledByTheOther(t *testing.T) {
	sites, url, _ := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	cs := na.agent()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer})
	}()
	id := nb.waitPending(1)[0]
	na.kill()
	killed := time.Now()

	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var state, reason string
	waitFor(t, "the surviving replica to cancel the killed one's waiting call", func() bool {
		err := db.QueryRow(`SELECT state, reason FROM approval_requests WHERE id = ?`, id).Scan(&state, &reason)
		return err == nil && state != string(vocab.StatePending)
	})
	if state != string(vocab.StateCancelled) || reason != approval.ReasonRestarted {
		t.Fatalf("the killed replica's request: %s %q, want cancelled %q", state, reason, approval.ReasonRestarted)
	}
	t.Logf("cancelled %v after the kill (grace %v)", time.Since(killed), store.DefaultGrace)
	n := 0
	for _, e := range b.exportAndVerify().entries {
		if e.RequestID == id && e.Kind == vocab.KindApprovalCancelled {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d approval.cancelled entries for the request, want 1", n)
	}
}
