package approval

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// The counters the caps read agree with a count of the pending requests
// after every step of a random run of creates, approvals, denials,
// cancellations, freezes, expiries (each swept) and restarts, on both
// dialects.
func TestPendingCountersAgreeWithTheRequests(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		clock := approvaltest.NewClock(time.Now())
		f := fixtureOn(t, t.TempDir(), db, func(o *Options) { o.Now = clock.Now })
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d", seed)
		rnd := rand.New(rand.NewPCG(seed, 1))
		agents := []string{"bot-a", "bot-b", "bot-c"}
		pick := func(expired bool) string { // a pending request, "" if none
			cond := `expires_at > ?`
			if expired {
				cond = `expires_at <= ?`
			}
			ids := f.ids(t, `SELECT id FROM approval_requests WHERE state = 'pending' AND `+cond+` ORDER BY id`, clock.Now().Unix())
			if len(ids) == 0 {
				return ""
			}
			return ids[rnd.IntN(len(ids))]
		}
		for step := range 80 {
			var err error
			op := rnd.IntN(10)
			switch id := pick(false); {
			case op < 4:
				nr := paymentRequest("alice")
				nr.Agent = agents[rnd.IntN(len(agents))]
				nr.Timeout = time.Duration(1+rnd.IntN(3)) * time.Minute
				if rnd.IntN(2) == 0 {
					nr.Wait = WaitPoll
				}
				_, err = f.svc.Create(ctx, nr)
			case op == 4 && id != "":
				_, err = f.decide(t, id, vocab.Approve, alice)
			case op == 5 && id != "":
				_, err = f.decide(t, id, vocab.Deny, alice)
			case op == 6 && id != "":
				err = f.svc.Cancel(ctx, id, "test")
			case op == 7:
				agent := agents[rnd.IntN(len(agents))]
				if _, err = f.svc.FreezeAgent(ctx, agent, "cli:root", "test"); err == nil {
					err = f.svc.UnfreezeAgent(ctx, agent, "cli:root", "test")
				}
			case op == 8:
				clock.Add(time.Minute)
				for id := pick(true); id != "" && err == nil; id = pick(true) {
					err = f.svc.expireErr(ctx, id)
				}
			case op == 9:
				f.restart(t)
				_, err = f.svc.Restart(ctx)
			}
			if err != nil {
				t.Fatalf("step %d (op %d): %v", step, op, err)
			}
			f.checkPendingCounters(t, append(agents, ""))
		}
	})
}

// ids returns the first column of query's rows.
func (f *fixture) ids(t *testing.T, query string, args ...any) []string {
	t.Helper()
	rows, err := f.db.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// checkPendingCounters fails t unless the counter of each agent ("": all)
// is the number of its requests stored as pending, and the table keeps
// no agent with none.
func (f *fixture) checkPendingCounters(t *testing.T, agents []string) {
	t.Helper()
	ctx := context.Background()
	for _, agent := range agents {
		// One statement, one snapshot: the expiry loop may end a request
		// between two.
		scope := "total"
		if agent != "" {
			scope = "agent:" + agent
		}
		var want, got int
		if err := f.db.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM approval_requests WHERE state = 'pending' AND (agent = ? OR ? = '')),
			COALESCE((SELECT n FROM approval_pending WHERE scope = ?), 0)`, agent, agent, scope).Scan(&want, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("counter of %q is %d, %d requests pending", agent, got, want)
		}
	}
	if zero := f.ids(t, `SELECT scope FROM approval_pending WHERE n <= 0 AND scope <> 'total'`); len(zero) > 0 {
		t.Fatalf("agents with nothing pending kept: %v", zero)
	}
}

// A cap refuses the request that would pass it, and no other: at
// exactly the cap, naming it; and a request past its expiry keeps
// counting until the sweep ends it (stricter, never looser).
func TestPendingCapsRefuseAtTheCapAndCountUnsweptExpiries(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		clock := approvaltest.NewClock(time.Now())
		f := fixtureOn(t, t.TempDir(), db, func(o *Options) { o.Now = clock.Now })
		// As a replica that does not lead the sweeps: nothing expires
		// a request here but the test.
		f.svc.leadingSweeps.Store(false)
		ctx := context.Background()
		create := func(agent string, perAgent, total int) (*Request, error) {
			nr := paymentRequest("alice")
			nr.Agent, nr.Wait = agent, WaitPoll
			nr.Caps = PendingCaps{PerAgent: perAgent, Total: total}
			return f.svc.Create(ctx, nr)
		}
		var first *Request
		for i := range 3 {
			r, err := create("bot-a", 3, 5)
			if err != nil {
				t.Fatalf("request %d of a cap of 3: %v", i+1, err)
			}
			if i == 0 {
				first = r
			}
		}
		var ce *CapError
		if _, err := create("bot-a", 3, 5); !errors.As(err, &ce) || *ce != (CapError{Agent: "bot-a", Pending: 3, Max: 3}) {
			t.Fatalf("4th of a cap of 3: %v", err)
		}
		for i := range 2 {
			if _, err := create("bot-b", 3, 5); err != nil {
				t.Fatalf("request %d of bot-b: %v", i+1, err)
			}
		}
		if _, err := create("bot-c", 3, 5); !errors.As(err, &ce) || *ce != (CapError{Pending: 5, Max: 5}) {
			t.Fatalf("6th of a total cap of 5: %v", err)
		}
		f.checkPendingCounters(t, []string{"bot-a", "bot-b", "bot-c", ""})
		for agent, want := range map[string]int{"bot-a": 3, "bot-b": 2, "bot-c": 0, "": 5} {
			if n, err := pending.Count(ctx, f.db, agent); err != nil || n != want {
				t.Errorf("Count(%q) = %d, %v; want %d", agent, n, err, want)
			}
		}

		// The page lists the agents with requests waiting from the counters.
		views, err := f.svc.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, v := range views {
			names = append(names, v.Name)
		}
		if !slices.Equal(names, []string{"bot-a", "bot-b"}) {
			t.Errorf("agents listed: %v, want bot-a and bot-b", names)
		}

		// Expired, not yet swept: still counted.
		clock.Add(2 * time.Minute)
		if _, err := create("bot-a", 3, 0); !errors.As(err, &ce) || ce.Agent != "bot-a" {
			t.Fatalf("bot-a over its cap with its requests expired, unswept: %v", err)
		}
		if err := f.svc.expireErr(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := create("bot-a", 3, 0); err != nil {
			t.Fatalf("bot-a with one request swept: %v", err)
		}
		f.checkPendingCounters(t, []string{"bot-a", "bot-b", "bot-c", ""})
	})
}

// A database made before the counters gets them from its pending
// requests (approval migration 5), on both dialects.
func TestPendingCountersFilledByMigration(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		for i := range 5 {
			nr := pollRequest("alice")
			nr.Agent = fmt.Sprintf("bot-%d", i%2)
			if _, err := f.svc.Create(ctx, nr); err != nil {
				t.Fatal(err)
			}
		}
		// As the version before: no counters, migration 4 the last run.
		if _, err := f.db.ExecContext(ctx, `DROP TABLE approval_pending`); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.ExecContext(ctx, `UPDATE schema_version SET version = 4 WHERE component = 'approval'`); err != nil {
			t.Fatal(err)
		}
		f.restart(t)
		f.checkPendingCounters(t, []string{"bot-0", "bot-1", ""})
	})
}
