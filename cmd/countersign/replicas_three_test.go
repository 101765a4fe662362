package main

// Three replicas under load: real `serve --http` processes on one
// PostgreSQL database, witnessed by a real litewitness, with agents on
// each. The leader is SIGKILLed while it runs a batch of approved
// transfers; the other two must carry on as one server.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness/witnesstest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestThreeReplicasUnderLoad: nine agents make routine calls and small
// transfers on three replicas; a batch of four transfers is approved with
// one tap on B's page while A, the leader, runs them, and A is killed
// with one of them paid but not recorded and the others claimed, not run. Afterwards an export from each
// survivor verifies, with the witness's cosignature; the log's seqs have
// no gap; its entries name three owners; only the leader ever submitted to
// the witness, and after the kill another replica checkpoints and submits
// what came after; every batch request ran once; ledger and log agree.
func TestThreeReplicasUnderLoad(t *testing.T) {
	lw := witnesstest.Start(t)
	// Each replica reaches the one witness through its own relay, so the
	// test sees who submits.
	relays := []*witnessRelay{relayTo(t, lw.URL), relayTo(t, lw.URL), relayTo(t, lw.URL)}
	hold := t.TempDir()
	sites, dbURL, pub := replicaSites(t, 3, func(i int, c *config.Config) {
		c.Audit.Witnesses = []config.Witness{{URL: relays[i].srv.URL, Key: lw.VKey}}
		c.Limits.CallsPerSecond = 1000 // nine busy agents, all "anonymous"
		tr := c.Tools["transfer"]
		tr.Batchable, tr.Wait = true, "poll"
		c.Tools["transfer"] = tr
	})
	lw.AddLog(audit.KeyName, pub)

	// A starts alone, so it leads. Its crash hook holds the first approved
	// transfer it runs after the ledger commits it, before its record, and
	// any later one before it runs; its routine transfers go on.
	a := sites[0].start("COUNTERSIGN_CRASHTEST_HOLD=transfer", "COUNTERSIGN_CRASHTEST_DIR="+hold,
		"COUNTERSIGN_CRASHTEST_HOLD_CALLS=request:")
	waitFor(t, "the first replica to lead", func() bool { return strings.Contains(a.stderr.String(), leading) })
	nodes := []*node{a}
	for _, s := range sites[1:] {
		s.key = sites[0].key // the approver enrolled once, in the shared database
		nodes = append(nodes, s.start())
	}
	b, c := nodes[1], nodes[2]
	// Every replica asked the witness once at start; from here on only
	// the leader may submit.
	before := make([]int, len(relays))
	for i, r := range relays {
		before[i] = r.submissions()
	}

	ld := &load{acked: map[string]bool{}, stop: make(chan struct{})}
	for i, n := range nodes {
		ld.start(t, n, i, 3)
	}
	waitFor(t, "the leader to submit a checkpoint of the load", func() bool {
		return relays[0].submissions() > before[0] && ld.count() > 50
	})

	// The batch: four transfers waiting on A, approved on B's page.
	batchArgs := func(i int) map[string]any {
		return map[string]any{"from": "operating", "to": "Vendor X", "amount": 2000, "currency": "USD", "memo": fmt.Sprintf("batch %d", i)}
	}
	agentA := a.agent()
	var batch []string
	for i := range 4 {
		batch = append(batch, pending(t, agentA, "transfer", batchArgs(i)))
	}
	b.waitPending(len(batch))
	approved, err := b.page.ApproveBatch(batch, sites[1].key)
	if err != nil {
		t.Fatalf("approving the batch on B: %v", err)
	}
	if len(approved) != len(batch) {
		t.Fatalf("the batch tap returned %d requests, want %d", len(approved), len(batch))
	}
	for _, r := range approved {
		if r.State != vocab.StateApproved {
			t.Fatalf("request %s after the batch tap: %s", r.ID, r.State)
		}
	}
	held := waitHeld(t, a, hold)
	if !slices.Contains(batch, strings.TrimPrefix(held, "request:")) {
		t.Fatalf("A held call %s, not one of the batch %v", held, batch)
	}
	for i := 1; i < len(relays); i++ {
		if got := relays[i].submissions(); got != before[i] {
			t.Errorf("replica %d submitted to the witness %d times while it did not lead", i, got-before[i])
		}
	}
	ld.killed(0)
	a.kill()
	db, err := store.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	killSeq := maxSeq(t, db)

	// Another replica leads, checkpoints what is appended after the kill
	// and has the witness cosign it; the third submits nothing.
	waitFor(t, "a surviving replica to lead", func() bool {
		return strings.Contains(b.stderr.String(), leading) || strings.Contains(c.stderr.String(), leading)
	})
	leader, follower := waitLeader(t, b, c)
	li, fi := slices.Index(nodes, leader), slices.Index(nodes, follower)
	waitFor(t, "a checkpoint past the kill, cosigned", func() bool {
		var size int64
		if err := db.QueryRow(`SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints`).Scan(&size); err != nil {
			t.Fatal(err)
		}
		return size > killSeq && lw.Size(audit.KeyName) > killSeq
	})
	if relays[li].submissions() == before[li] {
		t.Errorf("the new leader (replica %d) never submitted, yet the witness holds a tree past the kill", li)
	}

	// The batch: each request runs once, on the living; the one A paid
	// is recorded, not paid again.
	agentB := b.agent()
	for _, id := range batch {
		pollUntil(t, agentB, id, "executed")
	}
	ld.finish()
	if got := relays[fi].submissions(); got != before[fi] {
		t.Errorf("replica %d submitted to the witness %d times while it did not lead", fi, got-before[fi])
	}
	for _, f := range ld.failures() {
		t.Errorf("a call on a replica that was not killed: %s", f)
	}
	// The reaper gives A's routine calls in flight their outcomes.
	waitFor(t, "every routine call A left open to have its outcome", func() bool {
		return len(logInDB(t, db).openRoutineCalls()) == 0
	})

	var exports []*export
	for _, i := range []int{li, fi} {
		ex := sites[i].exportAndVerify()
		out := sites[i].cli("audit", "verify", sites[i].exportFile(), "--key", pub, "--witness-key", lw.VKey)
		if !strings.Contains(out, "witnessed by "+witnesstest.Name) {
			t.Errorf("replica %d's export is not witnessed: %s", i, out)
		}
		for j, e := range ex.entries {
			if e.Seq != int64(j+1) {
				t.Fatalf("replica %d's export: entry %d has seq %d", i, j+1, e.Seq)
			}
		}
		exports = append(exports, ex)
	}
	short, long := exports[0], exports[1]
	if len(short.entries) > len(long.entries) {
		short, long = long, short
	}
	for j, e := range short.entries {
		if long.entries[j].Hash != e.Hash {
			t.Fatalf("the survivors' exports part at seq %d", e.Seq)
		}
	}
	var n, top int64
	if err := db.QueryRow(`SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM audit_entries`).Scan(&n, &top); err != nil {
		t.Fatal(err)
	}
	if n != top {
		t.Errorf("the database holds %d entries up to seq %d: a gap", n, top)
	}
	t.Logf("%d entries, %d before the kill; %d transfers acknowledged to the agents", n, killSeq, len(ld.acked))

	// Three owners; only the CLI (approvers enroll) appends as none.
	owners := entryOwners(t, db)
	for i, nd := range nodes {
		id := replicaID(t, nd)
		if len(owners[id]) == 0 {
			t.Errorf("no entry names replica %d (%s) as its owner", i, id)
		}
		delete(owners, id)
	}
	for owner, kinds := range owners {
		if owner != "" || slices.ContainsFunc(kinds, func(k vocab.Kind) bool { return k != vocab.KindEnrollmentCreated }) {
			t.Errorf("entries of owner %q, not one of the three replicas: %v", owner, kinds)
		}
	}

	ex := long
	for _, id := range batch {
		outcomes := 0
		for _, k := range ex.kinds(id) {
			if k == vocab.KindCallExecuted || k == vocab.KindCallFailed || k == vocab.KindCallInterrupted {
				outcomes++
			}
		}
		if outcomes != 1 {
			t.Errorf("batch request %s: %v, want one outcome", id, ex.kinds(id))
		}
	}
	ledger := pgTransfers(t, dbURL)
	checkLedgerAgainstLog(t, ledger, ex)
	paid := map[string]int{}
	for _, call := range ledger {
		paid[call]++
	}
	for _, id := range batch {
		if paid["request:"+id] != 1 {
			t.Errorf("batch request %s was paid %d times", id, paid["request:"+id])
		}
	}
	// A paid one before the kill: its record is written after; the
	// others it claimed but never ran: they run on the living.
	for _, e := range ex.entries {
		if e.Kind != vocab.KindCallExecuted || !slices.Contains(batch, e.RequestID) {
			continue
		}
		if recorded := strings.HasPrefix(e.Reason, "recorded at start"); recorded != ("request:"+e.RequestID == held) {
			t.Errorf("batch request %s (A held %s) executed: %q", e.RequestID, held, e.Reason)
		}
	}
	for id := range ld.acked {
		if _, ok := ledger[id]; !ok {
			t.Errorf("transfer %s was acknowledged to an agent but is not in the ledger", id)
		}
	}
	checkEveryCallHasOutcome(t, ex)
}

// witnessRelay passes a replica's requests to the witness and counts its
// checkpoint submissions.
type witnessRelay struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   int
}

func relayTo(t *testing.T, target string) *witnessRelay {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &witnessRelay{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/add-checkpoint") {
			r.mu.Lock()
			r.n++
			r.mu.Unlock()
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *witnessRelay) submissions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// load is agents calling tools in a loop until stopped: reads of the
// balance and transfers of a cent, each with its own memo.
type load struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	calls int
	acked map[string]bool // transfer ids the agents were told about
	fail  []string        // what went wrong on replicas that were not killed
	dead  map[int]bool
}

// start runs agents on n (replica i) until finish.
func (l *load) start(t *testing.T, n *node, replica, agents int) {
	t.Helper()
	for a := range agents {
		cs := n.agent()
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				params := &sdk.CallToolParams{Name: "get_balance", Arguments: map[string]any{"account": "operating"}}
				if i%2 == 1 {
					params = &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{
						"from": "operating", "to": "Acme Supplies", "amount": 0.01, "currency": "USD",
						"memo": fmt.Sprintf("load %d/%d/%d", replica, a, i),
					}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := cs.CallTool(ctx, params)
				cancel()
				if !l.record(replica, params.Name, res, err) {
					return
				}
			}
		})
	}
}

// record notes a call's result and reports whether the agent goes on.
func (l *load) record(replica int, tool string, res *sdk.CallToolResult, err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead[replica] {
		return false
	}
	l.calls++
	switch {
	case err != nil:
		l.fail = append(l.fail, fmt.Sprintf("replica %d %s: %v", replica, tool, err))
		return false
	case res.IsError:
		l.fail = append(l.fail, fmt.Sprintf("replica %d %s: %s", replica, tool, servertest.ResultText(res)))
	case tool == "transfer":
		var out struct {
			TransferID string `json:"transfer_id"`
		}
		if json.Unmarshal([]byte(servertest.ResultText(res)), &out) == nil && out.TransferID != "" {
			l.acked[out.TransferID] = true
		}
	}
	return true
}

// killed says replica i was killed: its agents stop, and what they saw
// after is no failure.
func (l *load) killed(replica int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead == nil {
		l.dead = map[int]bool{}
	}
	l.dead[replica] = true
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// finish stops the agents and waits for their last calls.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.fail)
}

// waitHeld waits until n's crash hook holds a call and returns its id.
func waitHeld(t *testing.T, n *node, dir string) string {
	t.Helper()
	var id []byte
	waitFor(t, "the crash hook to hold an approved transfer", func() bool {
		var err error
		id, err = os.ReadFile(filepath.Join(dir, "held"))
		return err == nil && len(id) > 0
	})
	return string(id)
}

func maxSeq(t *testing.T, db *store.DB) int64 {
	t.Helper()
	var seq int64
	if err := db.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM audit_entries`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// logInDB is the log's entries as the database holds them, unverified.
func logInDB(t *testing.T, db *store.DB) *export {
	t.Helper()
	rows, err := db.Query(`SELECT body FROM audit_entries ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ex := &export{}
	for rows.Next() {
		var body string
		var e audit.Entry
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		ex.entries = append(ex.entries, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ex
}

// entryOwners is the kinds of the log's entries by the replica that
// appended them (audit_entries.owner: in the database, not in the
// export).
func entryOwners(t *testing.T, db *store.DB) map[string][]vocab.Kind {
	t.Helper()
	rows, err := db.Query(`SELECT owner, body FROM audit_entries ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]vocab.Kind{}
	for rows.Next() {
		var owner, body string
		var e audit.Entry
		if err := rows.Scan(&owner, &body); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		out[owner] = append(out[owner], e.Kind)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// replicaID is the id a replica logged at start.
func replicaID(t *testing.T, n *node) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(n.stderr.String()))
	for sc.Scan() {
		var line struct{ Msg, ID string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "replica" && line.ID != "" {
			return line.ID
		}
	}
	t.Fatalf("the replica logged no id:\n%s", n.stderr.String())
	return ""
}
