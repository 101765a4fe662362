package guard

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/countersign/countersign/vocab"
)

// Pending poll-mode requests are parked, not waited on: raising many adds
// no goroutine per request, and each still runs once when approved, or
// ends without running when cancelled.
func TestParkedRequestsHoldNoGoroutineAndRunOnce(t *testing.T) {
	w := newWorld(t)
	p := w.start()
	const n = 150 // within the default pending caps: 20 per agent, 200 in all
	before := runtime.NumGoroutine()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = w.raiseFor(p, fmt.Sprint("bot", i%10), "note", map[string]any{"note": fmt.Sprint("n", i)})
	}
	if grew := runtime.NumGoroutine() - before; grew > n/10 {
		t.Fatalf("%d pending requests added %d goroutines", n, grew)
	}
	w.approve(p, ids[0])
	w.waitState(p, ids[0], vocab.StateExecuted)
	if err := p.svc.Cancel(context.Background(), ids[1], "test"); err != nil {
		t.Fatal(err)
	}
	w.approve(p, ids[2])
	w.waitState(p, ids[2], vocab.StateExecuted)
	if got := w.book.count(); got != 2 {
		t.Fatalf("ran %d times, want 2 (the two approved)", got)
	}
	p.g.parkMu.Lock()
	left := len(p.g.parked)
	p.g.parkMu.Unlock()
	if left != n-3 {
		t.Fatalf("%d parked, want %d: the decided ones are let go", left, n-3)
	}
}
