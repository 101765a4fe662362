package main

// Replicas: two real `serve --http` processes, each with its own data
// directory and approver page, on one PostgreSQL database (store/pgtest),
// with one key file and one configuration. They must act as one server.

import (
	"context"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// leading is what a replica logs when it takes the leader's duties.
const leading = "leading: audit checkpoints and witnesses"

// replicaSites are n sites on one new PostgreSQL database, signing with
// one key file made by `countersign audit keygen`; edits adjust site i's
// configuration.
func replicaSites(t *testing.T, n int, edits ...func(i int, c *config.Config)) (sites []*site, url, pub string) {
	t.Helper()
	url = pgtest.URL(t)
	keyFile := filepath.Join(t.TempDir(), "server.key")
	out, err := exec.Command(binPath, "audit", "keygen", "--out", keyFile).Output()
	if err != nil {
		t.Fatalf("audit keygen: %v", err)
	}
	pub = strings.TrimSpace(string(out))
	for i := range n {
		sites = append(sites, newSite(t, func(c *config.Config) {
			c.Store.URL, c.Audit.KeyFile = url, keyFile
			c.Audit.CheckpointEvery = 200 * time.Millisecond
			for _, edit := range edits {
				edit(i, c)
			}
		}))
	}
	return sites, url, pub
}

func TestTwoReplicasOnPostgresServeAsOne(t *testing.T) {
	sites, url, pub := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	b.key = a.key // the approver enrolled once, in the shared database
	nb := b.start()

	// (a) A high-risk transfer waits on A; the approver taps on B's page;
	// A's call returns with the transfer done.
	cs := na.agent()
	done := make(chan *sdk.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer})
		if err != nil {
			res = &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: err.Error()}}}
		}
		done <- res
	}()
	ids := nb.waitPending(1)
	nb.decide(ids[0], "approve")
	approved := time.Now()
	select {
	case res := <-done:
		if res.IsError {
			t.Fatalf("the call waiting on A after approval on B: %s", servertest.ResultText(res))
		}
		t.Logf("A's call returned %v after the approval on B returned", time.Since(approved))
	case <-time.After(time.Minute):
		t.Fatalf("A's call did not return within a minute of the approval on B\nA:\n%s", na.stderr.String())
	}

	// (b) Either replica's export verifies, under the one key, and holds
	// one transfer with one call.executed.
	if got := strings.TrimSpace(b.cli("audit", "pubkey")); got != pub {
		t.Errorf("B's audit pubkey is %s, keygen printed %s", got, pub)
	}
	exA, exB := a.exportAndVerify(), b.exportAndVerify()
	if len(exA.entries) != len(exB.entries) {
		t.Errorf("A exports %d entries, B %d", len(exA.entries), len(exB.entries))
	}
	ledger := pgTransfers(t, url)
	if len(ledger) != 1 {
		t.Errorf("the ledger holds %d transfers, want 1", len(ledger))
	}
	checkLedgerAgainstLog(t, ledger, exB)

	// (d) One replica leads (writes the checkpoints); when it is killed,
	// the other takes over and checkpoints what is appended after.
	leader, follower := waitLeader(t, na, nb)
	leader.kill()
	waitFor(t, "the surviving replica to lead", func() bool { return strings.Contains(follower.stderr.String(), leading) })
	checkBalanceOn(t, follower)
	waitFor(t, "a checkpoint of the whole log by the new leader", func() bool { return checkpointed(t, url) })
	// Its calls all ended, the killed replica's row goes once the reaper
	// has found it dead and settled it.
	waitFor(t, "the killed replica's row to be forgotten", func() bool { return replicaRows(t, url) == 1 })
	// Its routine-call mark went with it; the survivor's stays.
	if n := routineMarks(t, url); n != 1 {
		t.Errorf("%d replicas' routine-call marks after the killed one was forgotten, want the survivor's alone", n)
	}

	// (c) A replica with another key is refused, naming both keys.
	other := filepath.Join(t.TempDir(), "other.key")
	key, err := audit.WriteNewKey(other)
	if err != nil {
		t.Fatal(err)
	}
	c := newSite(t, func(c *config.Config) { c.Store.URL, c.Audit.KeyFile = url, other })
	cmd := c.serveCmd(nil)
	outC, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("a replica with another key served")
	}
	for _, k := range []string{pub, audit.PublicKeyText(key.Public().(ed25519.PublicKey))} {
		if !strings.Contains(string(outC), k) {
			t.Errorf("the refusal does not name %s:\n%s", k, outC)
		}
	}
}

// waitLeader waits until one of the nodes leads and returns it first.
// Both never lead at once.
func waitLeader(t *testing.T, x, y *node) (leader, other *node) {
	t.Helper()
	waitFor(t, "a replica to lead", func() bool {
		return strings.Contains(x.stderr.String(), leading) || strings.Contains(y.stderr.String(), leading)
	})
	lx, ly := strings.Contains(x.stderr.String(), leading), strings.Contains(y.stderr.String(), leading)
	if lx && ly {
		t.Fatal("both replicas lead")
	}
	if lx {
		return x, y
	}
	return y, x
}

// checkBalanceOn makes a routine call on n: an entry for the log.
func checkBalanceOn(t *testing.T, n *node) {
	t.Helper()
	res := servertest.CallTool(t, n.agent(), "get_balance", map[string]any{"account": "operating"})
	if res.IsError {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
}

// checkpointed reports whether the latest checkpoint covers the whole log.
func checkpointed(t *testing.T, url string) bool {
	t.Helper()
	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size, seq int64
	if err := db.QueryRow(`SELECT COALESCE(MAX(size), 0), (SELECT COALESCE(MAX(seq), 0) FROM audit_entries) FROM audit_checkpoints`).Scan(&size, &seq); err != nil {
		t.Fatal(err)
	}
	return size == seq && seq > 0
}

// routineMarks counts the replicas' routine-call marks (guard.RoutineMark).
func routineMarks(t *testing.T, url string) int {
	return countRows(t, url, `SELECT COUNT(*) FROM store_marks WHERE name LIKE ?`, guard.RoutineMark("%"))
}

// replicaRows counts the rows of the replicas table.
func replicaRows(t *testing.T, url string) int {
	return countRows(t, url, `SELECT COUNT(*) FROM replicas`)
}

// countRows is what query, a count, counts in the database at url.
func countRows(t *testing.T, url, query string, args ...any) int {
	t.Helper()
	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pgTransfers is the ledger's transfers (id -> call id) in the database.
func pgTransfers(t *testing.T, url string) map[string]string {
	t.Helper()
	db, err := store.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, COALESCE(call_id, '') FROM ledger_transfers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, call string
		if err := rows.Scan(&id, &call); err != nil {
			t.Fatal(err)
		}
		out[id] = call
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// audit keygen writes a key once and never overwrites it.
func TestAuditKeygenNeverOverwrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.key")
	pub, err := exec.Command(binPath, "audit", "keygen", "--out", path).Output()
	if err != nil {
		t.Fatalf("audit keygen: %v", err)
	}
	if _, _, err := audit.ParsePublicKey(string(pub)); err != nil {
		t.Fatalf("keygen printed %q: %v", pub, err)
	}
	before, _ := os.ReadFile(path)
	out, err := exec.Command(binPath, "audit", "keygen", "--out", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "never overwrites") {
		t.Fatalf("keygen over an existing key: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the existing key was changed")
	}
}
