package approval

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
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
// already waiting for a human (the caps set above both), on each
// dialect: raising one must cost the same either way (compare the two
// ns/op of a dialect). retries/op is the transactions re-run after a
// conflict.
func BenchmarkCreateWithPending(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.PostgreSQL} {
		for _, pending := range []int{0, 10000} {
			b.Run(fmt.Sprintf("%s/pending=%d", d, pending), func(b *testing.B) {
				dir := b.TempDir()
				db := storetest.ConnectFile(b, filepath.Join(dir, store.FileName))
				if d == store.PostgreSQL {
					db = storetest.Connect(b, pgtest.URL(b))
				}
				f := fixtureOn(b, dir, db)
				ctx := context.Background()
				nr := paymentRequest("alice")
				nr.Timeout = time.Hour
				nr.Caps = PendingCaps{PerAgent: 100000, Total: 100000}
				f.waiting(b, nr, pending)
				retries := db.Retries()
				for b.Loop() {
					if _, err := f.svc.Create(ctx, nr); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(db.Retries()-retries)/float64(b.N), "retries/op")
			})
		}
	}
}

// BenchmarkListsWithPending reads what every open approver page reads
// again on each change, so on each raise (page.lists, /api/agents): the
// 100 pending requests that expire soonest, how many wait in all, the
// latest 50 decided and the agents; with 100 waiting (a full list) and with 10,000, on each
// dialect.
func BenchmarkListsWithPending(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.PostgreSQL} {
		for _, pending := range []int{100, 10000} {
			b.Run(fmt.Sprintf("%s/pending=%d", d, pending), func(b *testing.B) {
				dir := b.TempDir()
				db := storetest.ConnectFile(b, filepath.Join(dir, store.FileName))
				if d == store.PostgreSQL {
					db = storetest.Connect(b, pgtest.URL(b))
				}
				f := fixtureOn(b, dir, db)
				ctx := context.Background()
				nr := paymentRequest("alice")
				nr.Timeout = time.Hour
				for range 50 { // a history to list
					r, err := f.svc.Create(ctx, nr)
					if err != nil {
						b.Fatal(err)
					}
					if err := f.svc.Cancel(ctx, r.ID, "history"); err != nil {
						b.Fatal(err)
					}
				}
				f.waiting(b, nr, pending)
				for b.Loop() {
					if _, err := f.svc.Pending(ctx, 100); err != nil {
						b.Fatal(err)
					}
					if _, err := f.svc.PendingCount(ctx); err != nil {
						b.Fatal(err)
					}
					if _, err := f.svc.History(ctx, 50); err != nil {
						b.Fatal(err)
					}
					if _, err := f.svc.Agents(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCreateConcurrently raises requests from 8 goroutines at once
// over 10,000 waiting, on PostgreSQL, where every raise changes the same
// total counter row under SERIALIZABLE: retries/op is how many of those
// transactions conflicted and ran again.
func BenchmarkCreateConcurrently(b *testing.B) {
	dir := b.TempDir()
	db := storetest.Connect(b, pgtest.URL(b))
	f := fixtureOn(b, dir, db)
	nr := paymentRequest("alice")
	nr.Timeout = time.Hour
	nr.Caps = PendingCaps{PerAgent: 100000, Total: 100000}
	f.waiting(b, nr, 10000)
	var agent atomic.Int64
	retries := db.Retries()
	b.SetParallelism(4) // 8 on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		r := nr
		r.Agent = fmt.Sprintf("agent-%d", agent.Add(1)%50)
		for pb.Next() {
			if _, err := f.svc.Create(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(db.Retries()-retries)/float64(b.N), "retries/op")
}

// waiting leaves n requests like nr pending, of 50 agents (nr's among
// them): one raised, the rest its copies stored at once, then counted as
// the migration counts a database's (quicker than n raises, the same
// rows).
func (f *fixture) waiting(b *testing.B, nr NewRequest, n int) {
	if n == 0 {
		return
	}
	ctx := context.Background()
	r, err := f.svc.Create(ctx, nr)
	if err != nil {
		b.Fatal(err)
	}
	cols := `tool, args, args_sha256, redact_args, authorization_details, summary, display, level, rule, approvers, quorum,
		user_verification, code, binding_message, nonce, created_at, expires_at, interval_ms, state, wait_mode, owner`
	err = f.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_requests (id, agent, `+cols+`)
			WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?)
			SELECT id || '-' || i, 'agent-' || (i % 50), `+cols+` FROM approval_requests, s WHERE id = ?`, n-1, r.ID); err != nil {
			return err
		}
		return pending.Recount(ctx, tx, f.db.Dialect())
	})
	if err == nil && f.db.Dialect() == store.PostgreSQL {
		// As autovacuum would have by the time 10,000 were raised: without
		// it the planner takes the table for the few rows it last saw.
		_, err = f.db.ExecContext(ctx, `ANALYZE approval_requests`)
	}
	if err != nil {
		b.Fatal(err)
	}
}
