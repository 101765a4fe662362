package guard

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// sumRule raises a transfer to a human once the agent's day passes 100
// with it: a call of 30 passes with nothing else counted, and not beside
// a share of 120.
var sumRule = []config.Rule{{Name: "sum", When: "usage.agent_amount_24h + args.amount > 100.0", Level: vocab.LevelHigh}}

// usagePolicy is a policy on tools whose rules read the agent's amounts.
func usagePolicy(t *testing.T, wait string, names ...string) (*authz.Policy, map[string]config.Tool) {
	t.Helper()
	conf := map[string]config.Tool{}
	for _, n := range names {
		conf[n] = config.Tool{Level: vocab.LevelLow, Approvers: []string{"alice"}, Wait: wait, Rules: sumRule}
	}
	pol, err := authz.Compile(conf, []config.Approver{{ID: "alice"}}, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pol, conf
}

// sharedWindows opens db's shared usage windows and kept amounts.
func sharedWindows(t *testing.T, db *store.DB) (*store.UsageWindows, *store.Amounts) {
	t.Helper()
	ctx := context.Background()
	windows, err := store.OpenUsageWindows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	amounts, err := store.OpenAmounts(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { amounts.Close() })
	return windows, amounts
}

// newUsageWorld is a world on PostgreSQL whose lives decide transfers
// (to Acme, in USD) on shared usage windows.
func newUsageWorld(t *testing.T, wait string) (*world, *store.UsageWindows) {
	t.Helper()
	db := storetest.Connect(t, pgtest.URL(t))
	w := newWorldOn(t, db)
	pol, conf := usagePolicy(t, wait, "transfer")
	windows, amounts := sharedWindows(t, db)
	if err := w.cat.Replace("ledger", []*tools.Spec{payTo("Acme")}); err != nil {
		t.Fatal(err)
	}
	w.tune = func(o *Options) {
		o.Policy, o.Tools, o.SharedUsage, o.Amounts = pol, conf, windows, amounts
	}
	return w, windows
}

// agentSum is what the shared windows count of bot's calls of tool to
// Acme over the last day.
func agentSum(t *testing.T, windows *store.UsageWindows, tool string) store.UsageSum {
	t.Helper()
	key := []byte(keysOf("bot", tool, &tools.Value{Currency: "USD", Counterparty: "Acme"}).agent)
	var got store.UsageSum
	err := windows.Decide(context.Background(), nil, []store.UsageWindow{{Key: key, Since: 0}}, 0,
		func(s []store.UsageSum) ([]store.UsageAdd, error) {
			got = s[0]
			return nil, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func wantSum(t *testing.T, windows *store.UsageWindows, tool string, calls, amount float64, when string) {
	t.Helper()
	if got := agentSum(t, windows, tool); got.Calls != calls || got.Amount != amount {
		t.Fatalf("%s: the windows count %v calls of %s moving %v, want %v moving %v", when, got.Calls, tool, got.Amount, calls, amount)
	}
}

// noRowBelowZero fails if a give-back took a row below zero: given back
// twice, or from a minute that did not hold it.
func noRowBelowZero(t *testing.T, db *store.DB) {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM usage_minutes WHERE calls < 0 OR amount < 0`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d usage rows below zero (%v)", n, err)
	}
}

// requested waits for the log's approval.requested of a tool's call and
// returns its request.
func (w *world) requested(tool string) string {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.log.mu.Lock()
		for _, e := range w.log.entries {
			if e.Kind == vocab.KindApprovalRequested && e.Tool == tool {
				w.log.mu.Unlock()
				return e.RequestID
			}
		}
		w.log.mu.Unlock()
		if time.Now().After(deadline) {
			w.t.Fatalf("no request raised for %s", tool)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) deny(p *process, id string) {
	w.t.Helper()
	ctx := context.Background()
	opts, err := p.svc.BeginDecision(ctx, id, vocab.Deny)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := p.svc.FinishDecision(ctx, id, opts.Ceremony, w.alice.Get(opts.PublicKey.Challenge.String())); err != nil {
		w.t.Fatal(err)
	}
}

// A replica dies holding a block-mode transfer of 120 that waits for a
// human, counted in the shared windows. The replica that reaps it cancels
// it ("server restarted") and gives its share back: a transfer of 30,
// which passes only without it, then runs. Reaping again, the dead
// replica's caller waking to the cancellation, and two restarts give
// nothing back twice.
func TestReapGivesBackADeadReplicasWaitingShareOnce(t *testing.T) {
	w, windows := newUsageWorld(t, "block")
	ctx := context.Background()
	p1 := w.start()
	if err := p1.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan *mcp.CallToolResult, 1)
	go func() {
		waiting <- p1.g.Handle(ctx, Call{Tool: "transfer", Agent: "bot", Args: map[string]any{"amount": 120.0}})
	}()
	id := w.requested("transfer")
	wantSum(t, windows, "transfer", 1, 120, "while the request waits")

	// Its caller stays blocked in the dead life, as in a stopped process.
	p1.die()
	// The reaper runs every few seconds; the dead life's last entries may
	// still be leaving its outbox at the first.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := p2.g.Reap(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := p2.svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == vocab.StateCancelled && r.Reason == approval.ReasonRestarted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead replica's request after the reap: %s %q", r.State, r.Reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := p2.g.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	wantSum(t, windows, "transfer", 0, 0, "after the reap")
	if res := p2.g.Handle(ctx, Call{Tool: "transfer", Agent: "bot", Args: map[string]any{"amount": 30.0}}); res.IsError || strings.Contains(text(res), "authorization_pending") {
		t.Fatalf("a transfer of 30 with the dead replica's share given back: %s, want it to run", text(res))
	}
	wantSum(t, windows, "transfer", 1, 30, "after the 30 ran")

	select {
	case res := <-waiting:
		if !res.IsError {
			t.Fatalf("the dead replica's caller: %s", text(res))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the dead replica's caller never saw its request cancelled")
	}
	wantSum(t, windows, "transfer", 1, 30, "after the dead replica's caller gave its share back too")

	p2.die()
	w.restartTwice()
	wantSum(t, windows, "transfer", 1, 30, "after two restarts")
	noRowBelowZero(t, w.db)
}

// A replica dies with a poll-mode transfer waiting; the reaper and a
// replica starting beside it both resume it, each with its share rebuilt.
// Denied, it is given back once, though both hold it; the next start
// counts nothing again.
func TestResumedWaitingRequestGivesItsShareBackOnceWhenDenied(t *testing.T) {
	w, windows := newUsageWorld(t, "poll")
	ctx := context.Background()
	p1 := w.start()
	if err := p1.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	id := w.raise(p1, "transfer", map[string]any{"amount": 120.0})
	wantSum(t, windows, "transfer", 1, 120, "while the request waits")
	p1.die()

	if err := p2.g.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	p3 := w.start()
	if err := p3.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if !p2.g.isParked(id) || !p3.g.isParked(id) {
		t.Fatalf("resumed by the reaper: %v, by the start: %v; want both", p2.g.isParked(id), p3.g.isParked(id))
	}
	wantSum(t, windows, "transfer", 1, 120, "resumed, still waiting")

	w.deny(p2, id)
	deadline := time.Now().Add(10 * time.Second)
	for p2.g.isParked(id) || p3.g.isParked(id) {
		if time.Now().After(deadline) {
			t.Fatal("the denied request is still parked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p2.die() // waits for the dispatchers to finish giving back
	p3.die()
	wantSum(t, windows, "transfer", 0, 0, "denied, given back by both replicas that held it")

	p4 := w.start()
	if err := p4.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	wantSum(t, windows, "transfer", 0, 0, "after a restart")
	noRowBelowZero(t, w.db)
}

// held is a transfer-like tool whose runs wait for release and then fail
// without acting; with recover set it can tell afterwards that a call
// never took effect, otherwise not.
func held(name string, recover bool, release <-chan struct{}) *tools.Spec {
	s := payTo("Acme")
	s.Def = mcp.NewToolWithRawSchema(name, "pay", json.RawMessage(`{"type":"object"}`))
	s.Run = func(context.Context, *tools.Call) (*tools.Result, error) {
		<-release
		return nil, errors.New("released")
	}
	if recover {
		s.Recover = func(context.Context, *tools.Call) (*tools.Result, bool, error) { return nil, false, nil }
	}
	return s
}

// A dead replica leaves two routine transfers allowed, counted in the
// shared windows, with no outcome. The reaper settles both: the one
// whose backend tells it never took effect is call.failed and its share
// goes back; the other is call.interrupted and keeps counting, as
// RestoreUsage counts an interrupted call (it may have acted). When the
// dead replica's held run fails after all, it gives back only what the
// reaper did not.
func TestReapGivesBackADeadReplicasRoutineCallThatNeverRan(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, pgtest.URL(t))
	w := newWorldOn(t, db)
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if err := w.cat.Replace("ledger", []*tools.Spec{held("transfer", true, release), held("wire", false, release)}); err != nil {
		t.Fatal(err)
	}
	pol, conf := usagePolicy(t, "block", "transfer", "wire")
	windows, amounts := sharedWindows(t, db)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	owners := deadReplicaOwners(t, db)
	replica := func(owner string, recovery Recovery) *Guard {
		l, err := auditpg.Open(ctx, db, key, audit.Options{Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		g := New(Options{Catalog: w.cat, Policy: pol, Audit: l, History: l, Marks: store.Marks{DB: db},
			Recovery: recovery, Owner: owner, Owned: auditpg.Owned{DB: db}, Tools: conf,
			SharedUsage: windows, Amounts: amounts})
		t.Cleanup(g.Close)
		if err := g.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		return g
	}
	dead := replica("dead-1", nil)
	ran := make(chan *mcp.CallToolResult, 2)
	for _, tool := range []string{"transfer", "wire"} {
		go func() { ran <- dead.Handle(ctx, Call{Tool: tool, Agent: "bot", Args: map[string]any{"amount": 30.0}}) }()
	}
	waitOwned(t, db, "dead-1", 2)
	wantSum(t, windows, "transfer", 1, 30, "while the calls run")
	wantSum(t, windows, "wire", 1, 30, "while the calls run")

	reaper := replica("reaper-1", reaperService(t, w, db, owners))
	for range 2 {
		if err := reaper.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantSum(t, windows, "transfer", 0, 0, "after the reap: the call never ran")
	wantSum(t, windows, "wire", 1, 30, "after the reap: interrupted, it may have acted")

	close(release)
	<-ran
	<-ran
	wantSum(t, windows, "transfer", 0, 0, "after the dead replica's run failed too")
	noRowBelowZero(t, db)
}

// restartTwice starts, resumes, reaps and stops a replica, twice.
func (w *world) restartTwice() {
	w.t.Helper()
	ctx := context.Background()
	for range 2 {
		p := w.start()
		if err := p.g.Resume(ctx); err != nil {
			w.t.Fatal(err)
		}
		if err := p.g.Reap(ctx); err != nil {
			w.t.Fatal(err)
		}
		p.die()
	}
}

// waitSum waits for the shared windows to count calls moving amount of
// bot's tool: a share held by a watcher goes back when it sees its
// request end.
func waitSum(t *testing.T, windows *store.UsageWindows, tool string, calls, amount float64, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := agentSum(t, windows, tool)
		if got.Calls == calls && got.Amount == amount {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the windows count %v calls of %s moving %v, want %v moving %v", when, got.Calls, tool, got.Amount, calls, amount)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A replica dies with two CIBA requests waiting, each paying Acme in a
// transfer action counted in the shared windows. The reaper and a
// replica starting beside it both hold their shares, rebuilt from the
// amounts kept for the actions. The one denied is given back, once
// though both hold it; the one approved and then redeemed by its client
// on another replica keeps counting, as an executed call does. Later
// starts count nothing again.
func TestADeadReplicasCIBARequestsGiveTheirSharesBackOnceWhenTheyEndWithoutAToken(t *testing.T) {
	w, windows := newUsageWorld(t, "poll")
	conf := map[string]config.Tool{
		"transfer": {Level: vocab.LevelLow, Approvers: []string{"alice"}, Rules: sumRule},
		"ciba":     {Level: vocab.LevelHigh, Approvers: []string{"alice"}},
	}
	pol, err := authz.Compile(conf, []config.Approver{{ID: "alice"}}, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tune := w.tune
	w.tune = func(o *Options) { tune(o); o.Policy, o.Tools = pol, conf }
	ctx := context.Background()
	p1 := w.start()
	if err := p1.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	raise := func(amount float64) string {
		t.Helper()
		call, err := p1.g.PrepareAction(ctx, "transfer", map[string]any{"amount": amount})
		if err != nil {
			t.Fatal(err)
		}
		b := Backchannel{Tool: "ciba", Agent: "bot", Args: map[string]any{"binding_message": "pay", "amount": amount},
			Details: json.RawMessage(`[{"type":"payment"}]`), Summary: "pay Acme",
			Actions: []Action{{Tool: "transfer", Call: call}}}
		r, err := p1.g.Raise(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	denied, redeemed := raise(120), raise(50)
	wantSum(t, windows, "transfer", 2, 170, "while the requests wait")
	p1.die()

	if err := p2.g.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	p3 := w.start()
	if err := p3.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p2.g.Reap(ctx); err != nil { // reaping again holds nothing twice
		t.Fatal(err)
	}
	wantSum(t, windows, "transfer", 2, 170, "resumed, still waiting")

	w.deny(p2, denied)
	waitSum(t, windows, "transfer", 1, 50, "one denied")
	w.approve(p3, redeemed)
	// Its client collects the token on p3 later (as Redeem does).
	if err := p3.svc.BeginExecution(ctx, redeemed); err != nil {
		t.Fatal(err)
	}
	rec := audit.Entry{Kind: vocab.KindCallExecuted, Agent: "bot", Tool: "ciba", RequestID: redeemed, Decision: string(vocab.LevelHigh)}
	if err := p3.svc.Finish(ctx, redeemed, approval.Outcome{State: vocab.StateExecuted, Result: json.RawMessage(`{}`), Record: rec}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*process{p2, p3} {
		w.waitState(p, redeemed, vocab.StateExecuted)
	}
	// Both watchers have seen it end (a wrong give-back is made by then).
	for deadline := time.Now().Add(10 * time.Second); p2.g.watching() > 0 || p3.g.watching() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("still watched: %d by the reaper, %d by the start", p2.g.watching(), p3.g.watching())
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantSum(t, windows, "transfer", 1, 50, "one denied, one redeemed")
	p2.die()
	p3.die()
	w.restartTwice()
	wantSum(t, windows, "transfer", 1, 50, "after two restarts")
	noRowBelowZero(t, w.db)
}

// watching is how many backchannel requests g holds shares of for a gone
// process.
func (g *Guard) watching() int {
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	return len(g.watched)
}
