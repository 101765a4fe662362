package main

// Waiting that survives real clients (issue 26): a block-mode call waits
// at most approval.block_for, then returns authorization_pending as a
// normal result; the request stays pending, runs once when approved, and
// its one result is collected with approval_status. Driven by the Go SDK,
// and by the official TypeScript SDK client with its default request
// timeout (testdata/npm/blockfor-client.mjs).

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// highTransfer is a transfer the shipped policy raises to high (over
// 10,000): one approver's tap.
var highTransfer = map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"}

// startBlockFor is a product whose block-mode calls wait blockFor, with
// approval_status polled every second.
func startBlockFor(t *testing.T, blockFor time.Duration) *product {
	t.Helper()
	return startProduct(t, func(c *config.Config) {
		c.Approval.BlockFor = blockFor
		c.Approval.PollInterval = time.Second
	})
}

// checkHandedOver checks a block-mode call's answer at block_for: the
// request's id and its page (under page), how to go on, and a request
// still pending (state reads it).
func checkHandedOver(t *testing.T, page string, out map[string]any, state func(id string) vocab.State) string {
	t.Helper()
	id, _ := out["auth_req_id"].(string)
	url, _ := out["approval_url"].(string)
	next, _ := out["next"].(map[string]any)
	if out["status"] != "authorization_pending" || id == "" || !strings.HasPrefix(url, page) || !strings.Contains(url, id) ||
		next["tool"] != "approval_status" || !strings.Contains(toJSON(out["message"]), "approval_status") {
		t.Fatalf("answer at block_for: %v", out)
	}
	if st := state(id); st != vocab.StatePending {
		t.Fatalf("request %s is %s after block_for, want pending", id, st)
	}
	return id
}

// ranOnce is what a request that ran once leaves in the log.
var ranOnce = []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}

// checkRanOnce stops p and checks that request id was recorded once and
// moved money once, and that the export verifies.
func checkRanOnce(t *testing.T, p *product, id string) {
	t.Helper()
	if got := kindsOf(t, p.stack, id); !slices.Equal(got, ranOnce) {
		t.Errorf("log of %s: %v, want %v", id, got, ranOnce)
	}
	if _, out := exportAndVerify(t, p); !strings.HasPrefix(out, "OK:") {
		t.Errorf("audit verify: %s", out)
	}
	db := storetest.Connect(t, filepath.Join(p.cfg.Server.DataDir, store.FileName))
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ledger_transfers WHERE call_id = ?`, "request:"+id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("the ledger holds %d transfers of request %s, want 1", n, id)
	}
}

// A call nobody decides within block_for returns authorization_pending,
// not an error; approved afterwards, it runs once, and approval_status
// hands over its one result.
func TestBlockModeCallReturnsPendingAtBlockForAndRunsOnceWhenApproved(t *testing.T) {
	p := startBlockFor(t, 2*time.Second)
	page, key := enrollSoftKey(t, p)
	cs := newAgent(t, p).cs

	res := servertest.CallTool(t, cs, "transfer", highTransfer)
	var out map[string]any
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || res.IsError {
		t.Fatalf("transfer at block_for: %s (%v)", servertest.ResultText(res), err)
	}
	id := checkHandedOver(t, p.page, out, func(id string) vocab.State {
		r, err := p.Approvals().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return r.State
	})
	if st := status(t, cs, id); st["status"] != "authorization_pending" {
		t.Fatalf("approval_status before a decision: %v", st)
	}

	if _, err := page.Decide(id, "approve", key); err != nil {
		t.Fatal(err)
	}
	got := pollUntil(t, cs, id, "executed")
	result, _ := got["result"].(map[string]any)
	if result["status"] != "completed" || result["call_id"] != "request:"+id {
		t.Fatalf("approval_status once approved: %v", got)
	}
	// Asked again, it is the same one result: nothing ran twice.
	if again := status(t, cs, id); toJSON(again["result"]) != toJSON(got["result"]) {
		t.Errorf("approval_status asked again: %v, first %v", again, got)
	}
	checkRanOnce(t, p, id)
}

// A decision within block_for reaches the waiting call as before: its
// result, with progress notifications on the way.
func TestBlockModeCallDecidedWithinBlockForGetsItsResult(t *testing.T) {
	p := startBlockFor(t, time.Minute)
	page, key := enrollSoftKey(t, p)
	a := newAgent(t, p)
	done := make(chan string, 1)
	go func() {
		res := servertest.CallTool(t, a.cs, "transfer", highTransfer)
		done <- servertest.ResultText(res)
	}()
	id := approveNext(t, page, key)
	text := <-done
	if !strings.Contains(text, `"status":"completed"`) || !strings.Contains(text, "request:"+id) {
		t.Fatalf("result of a call approved within block_for: %s", text)
	}
	checkRanOnce(t, p, id)
}

// blockForClient is the TypeScript SDK client script.
func blockForClient(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot, "testdata", "npm")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		t.Fatalf("the official MCP TypeScript SDK is not installed (%v).\n"+
			"Run scripts/test.sh, which installs it, or: npm ci --prefix testdata/npm (Node.js 20 or later).", err)
	}
	return filepath.Join(dir, "blockfor-client.mjs")
}

// The official TypeScript SDK client, with its default request timeout
// (60 s, not reset by progress), calls a high transfer against a real
// `serve --http`. Nobody approves within block_for: it gets
// authorization_pending, polls approval_status as told, and collects the
// one result once a person approves.
//
// With the timing: the default block_for (50 s), under the
// client's 60 s, and the approval at 70 s, past the client's own timeout.
// It mostly waits, so it runs in parallel: beside the package's other
// parallel tests, once the sequential ones are done.
func TestTypeScriptClientWithDefaultTimeoutCollectsALateApproval(t *testing.T) {
	t.Parallel()
	script := blockForClient(t)
	blockFor, approveAt := 50*time.Second, 70*time.Second
	s := newSite(t, func(c *config.Config) {
		c.Approval.BlockFor = blockFor
		c.Approval.PollInterval = time.Second
	})
	s.bin = binPath
	n := s.start()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, n.mcp)
	cmd.Stderr = testWriter{t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the TypeScript client said nothing more (%v, exit %v)", lines.Err(), cmd.Wait())
		}
		var l map[string]any
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatalf("TypeScript client: %s", lines.Text())
		}
		return l
	}

	pending := next()
	answer, _ := pending["answer"].(map[string]any)
	if pending["event"] != "pending" {
		t.Fatalf("the TypeScript client's first answer: %v", pending)
	}
	id := checkHandedOver(t, crashOrigin, answer, func(id string) vocab.State {
		r, err := n.page.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		return r.State
	})
	t.Logf("authorization_pending after %v (block_for %v)", time.Since(start).Round(time.Millisecond), blockFor)
	if wait := approveAt - time.Since(start); wait > 0 {
		time.Sleep(wait)
	}
	n.decide(id, "approve")
	done := next()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the TypeScript client: %v (%v)", err, done)
	}
	result, _ := done["result"].(map[string]any)
	inner, _ := result["result"].(map[string]any)
	if done["event"] != "result" || result["status"] != "executed" || inner["call_id"] != "request:"+id {
		t.Fatalf("what the TypeScript client collected: %v", done)
	}
	t.Logf("collected after %v, %v polls", time.Since(start).Round(time.Millisecond), done["polls"])

	n.term()
	if got := s.exportAndVerify().kinds(id); !slices.Equal(got, ranOnce) {
		t.Errorf("log of %s: %v, want %v", id, got, ranOnce)
	}
	paid := 0
	for _, call := range s.ledgerTransfers() {
		if call == "request:"+id {
			paid++
		}
	}
	if paid != 1 {
		t.Errorf("the ledger holds %d transfers of request %s, want 1", paid, id)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
