package approval

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

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

// BenchmarkCreateWithPending raises requests with none and with 10,000
// already waiting for a human (the caps set above both): raising one
// must cost the same either way (compare the two ns/op).
func BenchmarkCreateWithPending(b *testing.B) {
	for _, pending := range []int{0, 10000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			f := newFixture(b)
			ctx := context.Background()
			nr := paymentRequest("alice")
			nr.Timeout = time.Hour
			nr.Caps = PendingCaps{PerAgent: 100000, Total: 100000}
			for i := range pending {
				nr.Agent = fmt.Sprintf("agent-%d", i%50)
				if _, err := f.svc.Create(ctx, nr); err != nil {
					b.Fatal(err)
				}
			}
			nr.Agent = "agent-1"
			for b.Loop() {
				if _, err := f.svc.Create(ctx, nr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
