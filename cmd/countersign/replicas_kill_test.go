package main

// Replicas killed and restarted: two real `serve --http` processes on one
// PostgreSQL database (replicaSites). A replica SIGKILLed at the worst
// moment leaves work the survivor's reaper must finish, once; a replica
// restarted beside a live one must leave the live one's work alone.

import (
	"bufio"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// logged reports whether the node logged msg with key set to value.
func (n *node) logged(msg, key, value string) bool {
	sc := bufio.NewScanner(strings.NewReader(n.stderr.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg && line[key] == value {
			return true
		}
	}
	return false
}

// pgDB is a connection to the replicas' database, closed with the test.
func pgDB(t *testing.T, url string) *store.DB {
	t.Helper()
	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// storedRequest is an approval request's row as the replicas share it.
type storedRequest struct{ state, owner, execOwner string }

func readRequest(t *testing.T, db *store.DB, id string) storedRequest {
	t.Helper()
	var r storedRequest
	if err := db.QueryRow(`SELECT state, owner, exec_owner FROM approval_requests WHERE id = ?`, id).Scan(&r.state, &r.owner, &r.execOwner); err != nil {
		t.Fatalf("request %s: %v", id, err)
	}
	return r
}

// appendedBy is the replica that appended the entry at seq.
func appendedBy(t *testing.T, db *store.DB, seq int64) string {
	t.Helper()
	var owner string
	if err := db.QueryRow(`SELECT owner FROM audit_entries WHERE seq = ?`, seq).Scan(&owner); err != nil {
		t.Fatalf("entry %d: %v", seq, err)
	}
	return owner
}

// outcomes are the export's outcome entries (executed, failed,
// interrupted) of tool.
func (ex *export) outcomes(tool string) []audit.Entry {
	var out []audit.Entry
	for _, e := range ex.entries {
		switch e.Kind {
		case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
			if e.Tool == tool {
				out = append(out, e)
			}
		}
	}
	return out
}

// Where the crashtest hook holds a transfer (COUNTERSIGN_CRASHTEST_HOLD_AT).
const (
	heldAfterCommit = "after"  // the ledger committed it, the record not yet written
	heldBeforeRun   = "before" // let through (and claimed), the ledger not yet asked
)

// startHeld starts a node whose transfers hold at the point named (the
// crashtest hook), and returns it with the directory the hook writes
// held to (waitHeld).
func (s *site) startHeld(at string) (n *node, dir string) {
	s.t.Helper()
	dir = s.t.TempDir()
	n = s.start("COUNTERSIGN_CRASHTEST_HOLD=transfer", "COUNTERSIGN_CRASHTEST_DIR="+dir, "COUNTERSIGN_CRASHTEST_HOLD_AT="+at)
	return n, dir
}

// pollTool sets every replica's tool to wait in poll mode.
func pollTool(name string) func(int, *config.Config) {
	return func(_ int, c *config.Config) { pollModeFor(name)(c) }
}

// A replica killed with a poll-mode request pending: the approver approves
// it on the other replica's page, and it runs there, once: approved while
// A is dead but not yet found so (B's reaper then runs the approved
// request), or after B's reaper took it over (B runs it on its decision).
func TestKilledReplicasPollRequestRunsOnceOnTheOther(t *testing.T) {
	for _, afterReap := range []bool{false, true} {
		t.Run(map[bool]string{false: "approved before the reap", true: "approved after the reap"}[afterReap], func(t *testing.T) {
			sites, url, _ := replicaSites(t, 2, pollTool("transfer"))
			a, b := sites[0], sites[1]
			na := a.start()
			b.key = a.key
			nb := b.start()
			db := pgDB(t, url)
			id := pending(t, na.agent(), "transfer", bigTransfer)
			nb.waitPending(1)
			aID, bID := replicaID(t, na), replicaID(t, nb)
			na.kill()

			if afterReap {
				waitFor(t, "B's reaper to take over A's poll-mode request", func() bool {
					return nb.logged("resuming approval request", "auth_req_id", id)
				})
				if r := readRequest(t, db, id); r.state != string(vocab.StatePending) {
					t.Fatalf("A's poll-mode request after the reap: %+v, want pending", r)
				}
			}
			nb.decide(id, "approve")
			out := pollUntil(t, nb.agent(), id, "executed")
			result, _ := out["result"].(map[string]any)
			if result["status"] != "completed" || result["call_id"] != "request:"+id {
				t.Fatalf("approval_status on B: %v", out)
			}
			if r := readRequest(t, db, id); r.owner != aID || r.execOwner != bID {
				t.Errorf("request made on A (%s) ran on %q, owned by %q; want run on B (%s)", aID, r.execOwner, r.owner, bID)
			}

			ex := b.exportAndVerify()
			want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
			if got := ex.kinds(id); !slices.Equal(got, want) {
				t.Errorf("log of %s: %v, want %v", id, got, want)
			}
			if got := ex.outcomes("transfer"); len(got) != 1 {
				t.Errorf("the log holds %d transfer outcomes, want 1", len(got))
			}
			ledger := pgTransfers(t, url)
			if len(ledger) != 1 || ledger[result["transfer_id"].(string)] != "request:"+id {
				t.Errorf("ledger %v, want the one transfer of request %s", ledger, id)
			}
			checkLedgerAgainstLog(t, ledger, ex)
		})
	}
}

// A replica killed after it claimed an approved transfer (BeginExecution):
// after the ledger committed it, B's reaper finds it there and records it;
// before the ledger was asked, B's reaper runs it. Either way exactly one
// outcome and one transfer, and the log and the ledger agree.
func TestKilledReplicasClaimedTransferIsSettledOnceByTheOther(t *testing.T) {
	for _, at := range []string{heldAfterCommit, heldBeforeRun} {
		t.Run(at, func(t *testing.T) {
			sites, url, _ := replicaSites(t, 2, pollTool("transfer"))
			a, b := sites[0], sites[1]
			na, hookDir := a.startHeld(at)
			b.key = a.key
			nb := b.start()
			db := pgDB(t, url)
			id := pending(t, na.agent(), "transfer", bigTransfer)
			nb.waitPending(1)
			aID, bID := replicaID(t, na), replicaID(t, nb)
			nb.decide(id, "approve") // A, its owner, hears of it and runs it
			approved := time.Now()
			waitHeld(t, na, hookDir)
			t.Logf("A ran the transfer %v after the approval on B", time.Since(approved))
			if r := readRequest(t, db, id); r.state != string(vocab.StateApproved) || r.execOwner != aID {
				t.Fatalf("held request: %+v, want approved and claimed by A (%s)", r, aID)
			}
			if l := pgTransfers(t, url); len(l) != map[string]int{heldAfterCommit: 1, heldBeforeRun: 0}[at] {
				t.Fatalf("the ledger holds %v while the transfer is held %s the run", l, at)
			}
			na.kill()
			killed := time.Now()

			out := pollUntil(t, nb.agent(), id, "executed")
			t.Logf("B settled it %v after the kill (grace %v)", time.Since(killed), store.DefaultGrace)
			result, _ := out["result"].(map[string]any)
			if result["call_id"] != "request:"+id {
				t.Fatalf("approval_status on B: %v", out)
			}
			ex := b.exportAndVerify()
			want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
			if got := ex.kinds(id); !slices.Equal(got, want) {
				t.Fatalf("log of %s: %v, want %v", id, got, want)
			}
			executed := ex.outcomes("transfer")
			if len(executed) != 1 || strings.HasPrefix(executed[0].Reason, "recorded at start") != (at == heldAfterCommit) {
				t.Fatalf("outcomes of the transfer: %+v, want one call.executed (recorded from the ledger if it committed)", executed)
			}
			if by := appendedBy(t, db, executed[0].Seq); by != bID {
				t.Errorf("the outcome was appended by %q, want B (%s)", by, bID)
			}
			ledger := pgTransfers(t, url)
			if len(ledger) != 1 || ledger[result["transfer_id"].(string)] != "request:"+id {
				t.Fatalf("ledger %v, want the one transfer of request %s", ledger, id)
			}
			checkLedgerAgainstLog(t, ledger, ex)
		})
	}
}

// A replica killed between a routine call's call.allowed and its outcome:
// B's reaper gives the call its one outcome, from the ledger:
// call.executed when the transfer committed, call.failed when it never
// ran (a routine call is its caller's to retry, and its caller is gone).
func TestKilledReplicasRoutineCallGetsOneOutcomeFromTheOther(t *testing.T) {
	for _, tc := range []struct {
		at       string
		kind     vocab.Kind
		reason   string
		transfer int
	}{
		{heldAfterCommit, vocab.KindCallExecuted, "recorded at start: the server stopped after the backend committed", 1},
		{heldBeforeRun, vocab.KindCallFailed, "recorded at start: the server stopped before this took effect", 0},
	} {
		t.Run(tc.at, func(t *testing.T) {
			sites, url, _ := replicaSites(t, 2)
			a, b := sites[0], sites[1]
			na, hookDir := a.startHeld(tc.at)
			b.key = a.key
			nb := b.start()
			db := pgDB(t, url)
			cs := na.agent()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{
					"from": "operating", "to": "Acme Supplies", "amount": 12.5, "currency": "USD"}}) // held, then killed
			}()
			waitHeld(t, na, hookDir)
			bID := replicaID(t, nb)
			na.kill()

			waitFor(t, "B's reaper to record the outcome of A's open call", func() bool {
				return strings.Contains(nb.stderr.String(), "recorded the outcome of a routine call the previous process left open")
			})
			ex := b.exportAndVerify()
			outcomes := ex.outcomes("transfer")
			if len(outcomes) != 1 || outcomes[0].Kind != tc.kind || !strings.HasPrefix(outcomes[0].Reason, tc.reason) {
				t.Fatalf("outcomes of the routine transfer: %+v, want one %s %q", outcomes, tc.kind, tc.reason)
			}
			if by := appendedBy(t, db, outcomes[0].Seq); by != bID {
				t.Errorf("the outcome was appended by %q, want B (%s)", by, bID)
			}
			if !strings.Contains(string(ex.argsOf(t, outcomes[0])), "Acme Supplies") {
				t.Errorf("the reaped outcome does not name the call's arguments: %+v", outcomes[0])
			}
			ledger := pgTransfers(t, url)
			if len(ledger) != tc.transfer {
				t.Fatalf("ledger %v, want %d transfers", ledger, tc.transfer)
			}
			checkLedgerAgainstLog(t, ledger, ex)
			checkEveryCallHasOutcome(t, ex)
		})
	}
}

// Restarting B while A has requests pending: B's stop and start leave
// them to A (still pending, A's waiting call still returns once approved),
// and B's start does not wait on a live replica's outbox.
func TestRestartingBLeavesLiveAsRequestsAlone(t *testing.T) {
	sites, url, _ := replicaSites(t, 2, pollTool("deploy"))
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key
	nb := b.start()
	db := pgDB(t, url)
	aID := replicaID(t, na)

	cs := na.agent()
	answer := make(chan *sdk.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer})
		if err != nil {
			res = &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "transport error: " + err.Error()}}}
		}
		answer <- res
	}()
	poll := pending(t, cs, "deploy", map[string]any{"service": "api", "version": "2.0.0", "environment": "production"})
	var block string
	for _, id := range nb.waitPending(2) {
		if id != poll {
			block = id
		}
	}

	// A live replica's queued entry, old enough that a dead owner's would
	// be taken at once: nobody but its owner may append it, and nobody
	// waits for it. The test holds that owner's liveness lock, as a live
	// replica whose appends are slow would.
	const busy = "busy-live-replica"
	owners, err := store.OwnersFor(context.Background(), db, store.OwnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release, err := owners.Hold(busy)
	if err != nil {
		t.Fatal(err)
	}
	queued, _ := json.Marshal(audit.Entry{Kind: vocab.KindApprovalRejected, RequestID: block, Reason: "queued by a live replica"})
	if _, err := db.Exec(`INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
		"", queued, string(vocab.KindApprovalRejected), busy, time.Now().Add(-10*time.Minute).UnixNano()); err != nil {
		t.Fatal(err)
	}

	stopping := time.Now()
	nb.term()
	stopped := time.Now()
	nb = b.start() // fails the test if the start gave up waiting
	t.Logf("B stopped in %v and started again in %v", stopped.Sub(stopping), time.Since(stopped))
	if strings.Contains(nb.stderr.String(), "waiting for audit entries") {
		t.Errorf("B's start waited on another replica's outbox:\n%s", nb.stderr.String())
	}
	var left string
	if err := db.QueryRow(`SELECT owner FROM approval_outbox WHERE kind = ?`, string(vocab.KindApprovalRejected)).Scan(&left); err != nil || left != busy {
		t.Fatalf("the live replica's queued entry after B's start: owner %q, %v; want still %s's", left, err, busy)
	}
	// Taken out again before its owner goes, so that it is never appended:
	// the test made it up.
	if _, err := db.Exec(`DELETE FROM approval_outbox WHERE owner = ?`, busy); err != nil {
		t.Fatal(err)
	}
	release()

	for _, id := range []string{block, poll} {
		if r := readRequest(t, db, id); r.state != string(vocab.StatePending) || r.owner != aID {
			t.Errorf("A's request %s after B restarted: %+v, want pending and A's (%s)", id, r, aID)
		}
	}
	nb.decide(block, "approve")
	if res := <-answer; res.IsError {
		t.Fatalf("A's waiting call after approval on the restarted B: %s", servertest.ResultText(res))
	}
	nb.decide(poll, "approve")
	if out := pollUntil(t, na.agent(), poll, "executed"); out["result"] == nil {
		t.Errorf("the poll-mode deploy: %v", out)
	}
	if r := readRequest(t, db, poll); r.execOwner != aID {
		t.Errorf("A's poll-mode request ran on %q, want A (%s), which lives", r.execOwner, aID)
	}

	ex := nb.s.exportAndVerify()
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
	for _, id := range []string{block, poll} {
		if got := ex.kinds(id); !slices.Equal(got, want) {
			t.Errorf("log of %s: %v, want %v", id, got, want)
		}
	}
	ledger := pgTransfers(t, url)
	if len(ledger) != 1 {
		t.Errorf("ledger %v, want the one approved transfer", ledger)
	}
	checkLedgerAgainstLog(t, ledger, ex)
}
