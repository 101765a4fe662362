package approval

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/vocab"
)

// Ceremonies nobody finished are deleted once they expire: a flood of
// begins leaves no rows behind (the page's rate limits bound how many
// there are; approval/page tests them).
func TestExpiredCeremoniesAreSwept(t *testing.T) {
	ctx := context.Background()
	clock := approvaltest.NewClock(time.Now())
	f := newFixture(t, func(o *Options) { o.Now = clock.Now })
	f.enroll(t, "alice", approvaltest.NewSoftKey(t, "localhost", testOrigin))
	req, err := f.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := f.svc.BeginDecision(ctx, req.ID, vocab.Approve); err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	f.db.QueryRow(`SELECT COUNT(*) FROM approval_ceremonies`).Scan(&rows)
	if rows < 5 {
		t.Fatalf("%d ceremony rows after 5 begins", rows)
	}
	if n, err := f.svc.keys.DeleteExpired(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before expiry deleted %d: %v", n, err)
	}
	clock.Add(ceremony.TTL + time.Second)
	if n, err := f.svc.keys.DeleteExpired(ctx); err != nil || int(n) != rows {
		t.Fatalf("sweep deleted %d of %d: %v", n, rows, err)
	}
	f.db.QueryRow(`SELECT COUNT(*) FROM approval_ceremonies`).Scan(&rows)
	if rows != 0 {
		t.Fatalf("%d ceremonies left after the sweep", rows)
	}
}
