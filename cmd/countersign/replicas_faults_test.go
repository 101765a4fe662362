package main

// Replicas under faults: two real `serve --http` processes on one
// PostgreSQL database (replicaSites), one of them paused past the grace,
// the database restarted under both, two approvers tapping at once on the
// two pages, and a payment split into pieces across both. Each ends with
// an export from a replica that `audit verify` accepts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// logOnFailure shows the nodes' logs if t fails.
func logOnFailure(t *testing.T, nodes ...*node) {
	t.Cleanup(func() {
		if t.Failed() {
			for i, n := range nodes {
				t.Logf("replica %d:\n%s", i, n.stderr.String())
			}
		}
	})
}

// pgOpen connects the test to the replicas' database, closed at the end.
func pgOpen(t *testing.T, url string) *store.DB {
	t.Helper()
	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// callAsync calls tool on cs in the background; a transport error comes
// back as an error result.
func callAsync(cs *sdk.ClientSession, tool string, args map[string]any) <-chan *sdk.CallToolResult {
	done := make(chan *sdk.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			res = &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "transport: " + err.Error()}}}
		}
		done <- res
	}()
	return done
}

// awaitCall waits for a call started with callAsync.
func awaitCall(t *testing.T, what string, done <-chan *sdk.CallToolResult) *sdk.CallToolResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// running reports whether the node's process has not exited.
func (n *node) running() bool {
	select {
	case err := <-n.done:
		n.done <- err
		return false
	default:
		return true
	}
}

// requestState is a request's state and reason in the database.
func requestState(t *testing.T, db *store.DB, id string) (state vocab.State, reason string) {
	t.Helper()
	if err := db.QueryRow(`SELECT state, reason FROM approval_requests WHERE id = ?`, id).Scan(&state, &reason); err != nil {
		t.Fatalf("request %s: %v", id, err)
	}
	return state, reason
}

// ownedEntries counts the audit entries the log holds for owner.
func ownedEntries(t *testing.T, db *store.DB, owner string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM audit_entries WHERE owner = ?`, owner).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// usageTotals is what the shared usage windows count, all keys together:
// calls and amount.
func usageTotals(t *testing.T, db *store.DB) [2]int64 {
	t.Helper()
	var calls, amount int64
	if err := db.QueryRow(`SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(amount), 0) FROM usage_minutes`).Scan(&calls, &amount); err != nil {
		t.Fatal(err)
	}
	return [2]int64{calls, amount}
}

// SIGSTOP A past the grace: B fences A, settles its block-mode request
// ("server restarted") and serves on. A, on SIGCONT, commits nothing (a
// routine transfer sent to it while it slept neither runs nor is logged)
// and exits non-zero, saying it was fenced.
func TestPausedReplicaIsFencedAndExitsWithoutCommitting(t *testing.T) {
	sites, url, _ := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	logOnFailure(t, na, nb)
	idA := replicaID(t, na)
	db := pgOpen(t, url)

	waiting := callAsync(na.agent(), "transfer", bigTransfer)
	id := nb.waitPending(1)[0]
	waitFor(t, "the call on A to wait for a human", func() bool { return strings.Contains(na.stderr.String(), raised) })
	late := na.agent() // connected now, called while A sleeps
	if err := na.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	small := map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 10, "currency": "USD", "memo": "sent to a sleeping replica"}
	lateCall := callAsync(late, "transfer", small)

	waitFor(t, "B to fence the paused A", func() bool {
		var fenced bool
		return db.QueryRow(`SELECT fenced FROM replicas WHERE id = ?`, idA).Scan(&fenced) == nil && fenced
	})
	waitFor(t, "B to settle A's waiting request", func() bool {
		state, _ := requestState(t, db, id)
		return state != vocab.StatePending
	})
	t.Logf("A fenced and its request settled %v after SIGSTOP (grace %v)", time.Since(paused), store.DefaultGrace)
	if state, reason := requestState(t, db, id); state != vocab.StateCancelled || reason != approval.ReasonRestarted {
		t.Fatalf("A's waiting request: %s %q, want cancelled %q", state, reason, approval.ReasonRestarted)
	}
	owned := ownedEntries(t, db, idA)

	if err := na.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var exit error
	select {
	case exit = <-na.done:
		na.done <- exit
	case <-time.After(time.Minute):
		t.Fatalf("A still runs a minute after SIGCONT, fenced:\n%s", na.stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(exit, &ee) || ee.ExitCode() == 0 {
		t.Errorf("the fenced replica exited with %v, want a non-zero status", exit)
	}
	for _, want := range []string{"fenced: shutting down", "was found dead by its peers and fenced"} {
		if !strings.Contains(na.stderr.String(), want) {
			t.Errorf("A's log lacks %q:\n%s", want, na.stderr.String())
		}
	}

	// What A's agents were told, and that A wrote nothing on waking.
	if res := awaitCall(t, "the block-mode call on A", waiting); !res.IsError {
		t.Errorf("the block-mode call on A succeeded: %s", servertest.ResultText(res))
	} else {
		t.Logf("the block-mode call on A: %s", servertest.ResultText(res))
	}
	if res := awaitCall(t, "the call sent to A while it slept", lateCall); !res.IsError {
		t.Errorf("the fenced replica ran a call after waking: %s", servertest.ResultText(res))
	} else {
		t.Logf("the call sent to A while it slept: %s", servertest.ResultText(res))
	}
	if n := ownedEntries(t, db, idA); n != owned {
		t.Errorf("the log holds %d entries owned by A after it woke, %d before", n, owned)
	}
	// Nothing ran, so the shared usage windows end up counting nothing:
	// A's waiting call's share given back once, by the reaper that
	// cancelled it (A's own give-back on waking finds it released), never
	// twice, which would leave a key below zero and let a later split
	// through.
	waitFor(t, "the usage windows to count nothing", func() bool { return usageTotals(t, db) == [2]int64{} })
	var below int
	if err := db.QueryRow(`SELECT count(*) FROM usage_minutes WHERE calls < 0 OR amount < 0`).Scan(&below); err != nil || below != 0 {
		t.Errorf("%d usage rows below zero (%v): a share was given back twice", below, err)
	}
	ledger := pgTransfers(t, url)
	if len(ledger) != 0 {
		t.Errorf("the ledger holds %d transfers; the fenced replica ran one", len(ledger))
	}

	checkBalanceOn(t, nb) // B serves on
	ex := b.exportAndVerify()
	if got, want := ex.kinds(id), []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalCancelled}; !slices.Equal(got, want) {
		t.Errorf("log of A's request: %v, want %v", got, want)
	}
	for _, e := range ex.entries {
		if e.Tool == "transfer" && e.RequestID == "" {
			t.Errorf("the log records %s of the transfer sent to the sleeping A", e.Kind)
		}
	}
	checkLedgerAgainstLog(t, ledger, ex)
}

// pg_ctl restart under two serving replicas: every session and lock is
// dropped at once, which must not look like death. Nobody is fenced or
// reaped, the requests waiting on both stay pending and are approved
// after, routine calls append again, and the log is one gapless chain.
func TestDatabaseRestartUnderTwoReplicasReapsNobody(t *testing.T) {
	sites, url, _ := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	ids := []string{replicaID(t, na), replicaID(t, nb)}
	logOnFailure(t, na, nb)
	waits := []<-chan *sdk.CallToolResult{
		callAsync(na.agent(), "transfer", bigTransfer),
		callAsync(nb.agent(), "transfer", bigTransfer),
	}
	pendingIDs := nb.waitPending(2)
	// Listed is not yet raised: each guard says when its call waits.
	waitFor(t, "both calls to wait for a human", func() bool {
		return strings.Contains(na.stderr.String(), raised) && strings.Contains(nb.stderr.String(), raised)
	})
	checkBalanceOn(t, na)
	checkBalanceOn(t, nb)

	pgtest.Restart(t)
	db := pgOpen(t, url)
	waitFor(t, "both replicas to hold their liveness locks again", func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND s.application_name IN (?, ?)`,
			store.OwnerApplicationName+" "+ids[0], store.OwnerApplicationName+" "+ids[1]).Scan(&n)
		return err == nil && n == 2
	})
	// The reaper takes no owner for dead on a server up for less than a
	// grace; past that, and two of its rounds, it has had its chance.
	waitFor(t, "the restarted server to be up for a grace and two reaper rounds", func() bool {
		var up bool
		err := db.QueryRow(`SELECT pg_postmaster_start_time() < now() - make_interval(secs => ?)`,
			(store.DefaultGrace + 2*reapRounds).Seconds()).Scan(&up)
		return err == nil && up
	})

	for i, n := range []*node{na, nb} {
		if !n.running() {
			t.Fatalf("replica %d exited after the database restart:\n%s", i, n.stderr.String())
		}
		var fenced bool
		if err := db.QueryRow(`SELECT fenced FROM replicas WHERE id = ?`, ids[i]).Scan(&fenced); err != nil || fenced {
			t.Errorf("replica %s after the database restart: fenced %v (%v)", ids[i], fenced, err)
		}
		if strings.Contains(n.stderr.String(), "fenced") {
			t.Errorf("replica %d speaks of a fence:\n%s", i, n.stderr.String())
		}
	}
	for _, id := range pendingIDs {
		if state, reason := requestState(t, db, id); state != vocab.StatePending {
			t.Errorf("request %s after the database restart: %s %q, want pending", id, state, reason)
		}
	}

	// Appends resume: routine calls on both, then the waiting calls,
	// approved each on one page, return with their transfers.
	checkBalanceOn(t, na)
	checkBalanceOn(t, nb)
	na.decide(pendingIDs[0], "approve")
	nb.decide(pendingIDs[1], "approve")
	for i, w := range waits {
		if res := awaitCall(t, "a call waiting across the restart", w); res.IsError {
			t.Errorf("the call waiting on replica %d: %s", i, servertest.ResultText(res))
		}
	}
	waitFor(t, "a checkpoint of the whole log after the restart", func() bool { return checkpointed(t, url) })

	ex := a.exportAndVerify()
	for i, e := range ex.entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d: the chain has a gap", i+1, e.Seq)
		}
		if e.Kind == vocab.KindApprovalCancelled {
			t.Errorf("request %s was cancelled: %s", e.RequestID, e.Reason)
		}
	}
	ledger := pgTransfers(t, url)
	if len(ledger) != 2 {
		t.Errorf("the ledger holds %d transfers, want 2", len(ledger))
	}
	checkLedgerAgainstLog(t, ledger, ex)
}

// raised is what the guard logs once a call's request is raised and the
// call waits.
const raised = `"msg":"approval required"`

// reapRounds is how often the leading replica's reaper looks
// (internal/daemon's reapEvery).
const reapRounds = 2 * time.Second

// A critical transfer (quorum 2) waiting on A: alice taps on A's page and
// bob on B's, their assertions sent at the same moment. Each vote counts
// once; the request is approved once; the transfer runs once. Three rounds,
// to give the race its chances.
func TestQuorumAcrossReplicasTappedAtOnce(t *testing.T) {
	sites, url, _ := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	logOnFailure(t, na, nb)
	bob := approvaltest.NewSoftKey(t, "localhost", crashOrigin)
	if err := nb.page.Enroll(strings.TrimSpace(b.cli("approvers", "enroll", "bob")), bob); err != nil {
		t.Fatal(err)
	}
	cs := na.agent()
	huge := map[string]any{"from": "operating", "to": "Vendor X", "amount": 300000, "currency": "USD"}
	var ids []string
	for round := range 3 {
		waiting := callAsync(cs, "transfer", huge)
		id := nb.waitPending(1)[0]
		ids = append(ids, id)
		if r, err := na.page.Get(id); err != nil || r.Level != string(vocab.LevelCritical) || r.Quorum != 2 {
			t.Fatalf("round %d: the request on A's page: %+v (%v), want critical, quorum 2", round, r, err)
		}
		cerA, chA, err := na.page.BeginDecision(id, "approve")
		if err != nil {
			t.Fatal(err)
		}
		cerB, chB, err := nb.page.BeginDecision(id, "approve")
		if err != nil {
			t.Fatal(err)
		}
		tapA, tapB := a.key.Get(chA), bob.Get(chB)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		wg.Go(func() { <-start; _, errs[0] = na.page.FinishDecision(id, cerA, tapA) })
		wg.Go(func() { <-start; _, errs[1] = nb.page.FinishDecision(id, cerB, tapB) })
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s's tap: %v", round, []string{"alice", "bob"}[i], err)
			}
		}
		if res := awaitCall(t, "the critical call on A", waiting); res.IsError {
			t.Fatalf("round %d: the call on A: %s", round, servertest.ResultText(res))
		}
		r, err := nb.page.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(slices.Values(r.Approvals)); r.State != vocab.StateExecuted || !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("round %d: the request is %s with approvals %v, want executed with alice's and bob's", round, r.State, r.Approvals)
		}
	}

	ex := b.exportAndVerify()
	for _, id := range ids {
		count := map[vocab.Kind]int{}
		for _, k := range ex.kinds(id) {
			count[k]++
		}
		if count[vocab.KindApprovalAssertion] != 2 || count[vocab.KindApprovalApproved] != 1 || count[vocab.KindCallExecuted] != 1 {
			t.Errorf("log of %s: %v, want two assertions, one approval, one execution", id, ex.kinds(id))
		}
	}
	ledger := pgTransfers(t, url)
	if len(ledger) != len(ids) {
		t.Errorf("the ledger holds %d transfers, want %d", len(ledger), len(ids))
	}
	checkLedgerAgainstLog(t, ledger, ex)
}

// slice is 2,000 to one known payee: five add up to the shipped rule's
// 10,000 a day to a payee; a sixth needs a human.
const slice, sliceLimit = 2000, 10000

// A payment split into 2,000 pieces across A and B, first one after the
// other alternating replicas, then all at once on both, runs only up to
// the window's 10,000 a payee; every piece past it waits for a human
// (poll mode), and one approved on the page runs.
func TestSalamiSplitAcrossReplicasCannotPassTheWindow(t *testing.T) {
	sites, url, _ := replicaSites(t, 2, func(_ int, c *config.Config) { pollModeFor("transfer")(c) })
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	logOnFailure(t, na, nb)
	agents := []*sdk.ClientSession{na.agent(), nb.agent()}
	piece := func(payee string, i int) map[string]any {
		return map[string]any{"from": "operating", "to": payee, "amount": slice, "currency": "USD", "memo": fmt.Sprintf("piece %d", i)}
	}

	// One after the other, alternating: five run, then each waits.
	var waitingIDs []string
	for i := range 8 {
		res := servertest.CallTool(t, agents[i%2], "transfer", piece("Acme Supplies", i))
		var out struct {
			Status string `json:"status"`
			ID     string `json:"auth_req_id"`
		}
		if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || res.IsError {
			t.Fatalf("piece %d: %s (%v)", i, servertest.ResultText(res), err)
		}
		want := "completed"
		if (i+1)*slice > sliceLimit {
			want = "authorization_pending"
			waitingIDs = append(waitingIDs, out.ID)
		}
		if out.Status != want {
			t.Fatalf("piece %d (on replica %d, %d before it): %s, want %s", i, i%2, i*slice, out.Status, want)
		}
	}

	// All at once, six on each replica: five run, whichever they are.
	var wg sync.WaitGroup
	start := make(chan struct{})
	statuses := make([]string, 12)
	for i := range statuses {
		wg.Go(func() {
			<-start
			res, err := agents[i%2].CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: piece("Globex Logistics", i)})
			if err != nil {
				statuses[i] = "transport: " + err.Error()
				return
			}
			var out struct {
				Status string `json:"status"`
			}
			json.Unmarshal([]byte(servertest.ResultText(res)), &out)
			statuses[i] = out.Status
			if res.IsError {
				statuses[i] = "error: " + servertest.ResultText(res)
			}
		})
	}
	close(start)
	wg.Wait()
	count := map[string]int{}
	for _, st := range statuses {
		count[st]++
	}
	if count["completed"] != sliceLimit/slice || count["authorization_pending"] != len(statuses)-sliceLimit/slice {
		t.Errorf("twelve pieces at once on both replicas: %v, want %d completed and the rest pending", count, sliceLimit/slice)
	}

	// Past the window only with a human: one waiting piece approved on
	// the other replica's page runs.
	nb.decide(waitingIDs[0], "approve")
	if out := pollUntil(t, agents[1], waitingIDs[0], "executed"); out["result"] == nil {
		t.Errorf("the approved piece: %v", out)
	}

	db := pgOpen(t, url)
	rows, err := db.Query(`SELECT to_name, count(*), sum(amount) FROM ledger_transfers GROUP BY to_name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	paid := map[string][2]int64{}
	for rows.Next() {
		var to string
		var n, sum int64
		if err := rows.Scan(&to, &n, &sum); err != nil {
			t.Fatal(err)
		}
		paid[to] = [2]int64{n, sum}
	}
	const cents = 100
	want := map[string][2]int64{
		"Acme Supplies":    {sliceLimit/slice + 1, (sliceLimit + slice) * cents}, // one past the window, approved
		"Globex Logistics": {sliceLimit / slice, sliceLimit * cents},
	}
	for to, w := range want {
		if paid[to] != w {
			t.Errorf("paid to %s: %d transfers, %d cents; want %d, %d", to, paid[to][0], paid[to][1], w[0], w[1])
		}
	}

	ex := a.exportAndVerify()
	approved := 0
	for _, e := range ex.entries {
		if e.Kind == vocab.KindCallExecuted && e.Tool == "transfer" && e.RequestID != "" {
			approved++
		}
	}
	if approved != 1 {
		t.Errorf("%d transfers ran with an approval, want 1", approved)
	}
	checkLedgerAgainstLog(t, pgTransfers(t, url), ex)
}
