package approval

import (
	"context"
	"log/slog"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/vocab"
)

// BenchmarkCreateApprove measures one request's life up to BeginExecution:
// create (persist + audit), begin the ceremony, verify the assertion,
// count it, record it, claim execution.
func BenchmarkCreateApprove(b *testing.B) {
	slog.SetLogLoggerLevel(slog.LevelWarn)
	defer slog.SetLogLoggerLevel(slog.LevelInfo)
	f := newFixture(b)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(b, "localhost", testOrigin)
	f.enroll(b, "alice", alice)
	for b.Loop() {
		req, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			b.Fatal(err)
		}
		c, resp := f.sign(b, req.ID, vocab.Approve, alice)
		if _, err := f.svc.FinishDecision(ctx, req.ID, c, resp); err != nil {
			b.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			b.Fatal(err)
		}
	}
}
