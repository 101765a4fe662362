package approval

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// BenchmarkDecisionToResult is the path issue 24 bounds on PostgreSQL
// (p50 <= 10 ms): a decision committed on replica B, the call waiting on
// A wakes, claims its one run, and finishes with its outcome recorded.
// decided_to_result is from B's decision (decided_at) to A's Finish
// returning; the recorder is in memory, so this is the approval service's
// own round trips, without the audit log's.
func BenchmarkDecisionToResult(b *testing.B) {
	url := pgtest.URL(b)
	dir := b.TempDir()
	open := func() *fixture {
		db := storetest.Connect(b, url)
		owners, err := store.OwnersFor(context.Background(), db, store.OwnerOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return fixtureOn(b, dir, db, func(o *Options) { o.Owners = owners })
	}
	a, bb := open(), open()
	alice := approvaltest.NewSoftKey(b, "localhost", testOrigin)
	bb.enroll(b, "alice", alice)
	ctx := context.Background()
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		req, err := a.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			b.Fatal(err)
		}
		c, resp := bb.sign(b, req.ID, vocab.Approve, alice)
		done := make(chan error, 1)
		go func() {
			if _, err := a.svc.Wait(ctx, req.ID); err != nil {
				done <- err
				return
			}
			if err := a.svc.BeginExecution(ctx, req.ID); err != nil {
				done <- err
				return
			}
			done <- a.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted, Result: []byte(`{"ok":true}`),
				Record: audit.Entry{Kind: vocab.KindCallExecuted, Agent: req.Agent, Tool: req.Tool, Decision: string(req.Level)}})
		}()
		b.StartTimer()
		if _, err := bb.svc.FinishDecision(ctx, req.ID, c, resp); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		end := time.Now()
		var decided int64
		if err := a.db.QueryRowContext(ctx, `SELECT decided_at FROM approval_requests WHERE id = ?`, req.ID).Scan(&decided); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, end.Sub(time.Unix(0, decided)))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "decided_to_result_p50_ms")
}
