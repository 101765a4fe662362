package main

// Honest outcomes end to end: an approved call of a hostile upstream (the
// test upstream's stubborn tool, which completes after being told to
// cancel) outlives its agent, is recorded as it ended, and its result waits
// for the agent; a call sent without an answer is call.interrupted, never
// call.failed, and `calls reconcile` records what a person found out; an
// approved read_secret's value is nowhere in the database files once
// delivered.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// stubbornUpstream is the test upstream with its stubborn tool, over
// Streamable HTTP, each call bounded by callTimeout.
func stubbornUpstream(t *testing.T, name string, callTimeout time.Duration) (config.Upstream, *httptest.Server, string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "upstream-record.jsonl")
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: record, Stubborn: true}))
	t.Cleanup(srv.Close)
	return config.Upstream{Name: name, Prefix: name + "__", URL: srv.URL, ConnectTimeout: 10 * time.Second,
		CallTimeout: callTimeout}, srv, record
}

// upstreamEvents lists what the upstream recorded of tool, in order.
func upstreamEvents(t *testing.T, record, tool string) []string {
	t.Helper()
	recs, err := upstreamtest.ReadRecord(record)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if r.Tool == tool {
			out = append(out, r.Event)
		}
	}
	return out
}

func waitUpstream(t *testing.T, record, tool string, events ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := strings.Join(upstreamEvents(t, record, tool), ",")
		if got == strings.Join(events, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream recorded %s: %s, want %v", tool, got, events)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionOf connects as agent (one of taskAgents) over Streamable HTTP.
func sessionOf(t *testing.T, p *product, agent string) *sdk.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: bearer{taskAgents[agent], http.DefaultTransport}}
	return connect(t, &sdk.StreamableClientTransport{Endpoint: p.agent, HTTPClient: hc, MaxRetries: -1}, protocolVersions[0], nil)
}

// approveNext approves the one pending request with key and returns it.
func approveNext(t *testing.T, page *approvaltest.Page, key *approvaltest.SoftKey) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids, err := page.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) == 1 {
			if _, err := page.Decide(ids[0], "approve", key); err != nil {
				t.Fatal(err)
			}
			return ids[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %v, want one request", ids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kindsOf lists the kinds of the log's entries about request id.
func kindsOf(t *testing.T, s *stack, id string) []vocab.Kind {
	t.Helper()
	all, err := s.Audit().Since(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []vocab.Kind
	for _, e := range all {
		if e.RequestID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

// toJSON is v as JSON text, for a test to search.
func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func waitState(t *testing.T, p *product, id string, state vocab.State) *approval.Request {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := p.Approvals().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == state {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s is %s (%s), want %s", id, r.State, r.Reason, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestApprovedUpstreamCallOutlivesItsAgentAndItsResultWaits(t *testing.T) {
	up, _, record := stubbornUpstream(t, "hostile", time.Minute)
	p := startProduct(t, func(c *config.Config) {
		withTaskAgents(c)
		c.Upstreams = []config.Upstream{up}
	})
	page, key := enrollSoftKey(t, p)

	cs := sessionOf(t, p, "agent-a")
	ctx, leave := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "hostile__stubborn",
			Arguments: map[string]any{"name": "plan", "text": "ship it", "ms": 1000}})
		ended <- err
	}()
	id := approveNext(t, page, key)
	waitUpstream(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled)
	// The agent gives up (notifications/cancelled) and goes away while
	// the upstream acts.
	leave()
	if err := <-ended; err == nil {
		t.Fatal("the call returned to an agent that had left")
	}
	cs.Close()
	waitState(t, p, id, vocab.StateExecuted)
	// The upstream was never told to cancel, and completed.
	waitUpstream(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled, upstreamtest.EventCompleted)
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
	deadline := time.Now().Add(10 * time.Second)
	for got := kindsOf(t, p.stack, id); !slices.Equal(got, want); got = kindsOf(t, p.stack, id) {
		if time.Now().After(deadline) {
			t.Fatalf("log of %s: %v, want %v", id, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The same agent, connected again, collects the result.
	again := sessionOf(t, p, "agent-a")
	out := status(t, again, id)
	if out["status"] != "executed" || !strings.Contains(toJSON(out["result"]), "wrote plan") {
		t.Fatalf("approval_status after reconnecting: %v", out)
	}
	// Another agent cannot.
	other := servertest.CallTool(t, sessionOf(t, p, "agent-b"), "approval_status", map[string]any{"auth_req_id": id})
	if !other.IsError || strings.Contains(servertest.ResultText(other), "wrote plan") {
		t.Errorf("another agent's approval_status: %s", servertest.ResultText(other))
	}
}

func TestUpstreamCallWithoutAnAnswerIsInterruptedNeverFailedAndReconciled(t *testing.T) {
	up, _, record := stubbornUpstream(t, "hostile", 300*time.Millisecond)
	flaky, srv, flakyRecord := stubbornUpstream(t, "flaky", time.Minute)
	p := startProduct(t, func(c *config.Config) {
		withTaskAgents(c)
		c.Upstreams = []config.Upstream{up, flaky}
	})
	page, key := enrollSoftKey(t, p)
	tc := httpTaskClient(t, p.agent, "agent-a")

	// An upstream that answers after call_timeout.
	task := tc.start("hostile__stubborn", map[string]any{"name": "late", "text": "x", "ms": 1500})
	if id := approveNext(t, page, key); id != task.TaskId {
		t.Fatalf("approved %s, task %s", id, task.TaskId)
	}
	res := tc.mustResult(task.TaskId)
	if !res.IsError || !strings.Contains(toolText(res.Content), "outcome is unknown") {
		t.Fatalf("tasks/result of a timed-out call: %s", toolText(res.Content))
	}
	if got := tc.mustGet(task.TaskId); got.Status != mcp.TaskStatusFailed || !strings.Contains(got.StatusMessage, "outcome is unknown") {
		t.Errorf("tasks/get: %s %q", got.Status, got.StatusMessage)
	}
	// It did act, after the gateway stopped waiting: why "unknown" and
	// never "failed".
	waitUpstream(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled, upstreamtest.EventCancelled, upstreamtest.EventCompleted)
	r := waitState(t, p, task.TaskId, vocab.StateInterrupted)
	if err := p.Approvals().BeginExecution(context.Background(), r.ID); !errors.Is(err, approval.ErrNotApproved) {
		t.Errorf("the interrupted approval was claimed again: %v", err)
	}

	// An upstream whose connection drops mid-call.
	cs := sessionOf(t, p, "agent-a")
	dropped := make(chan *sdk.CallToolResult, 1)
	go func() {
		res, _ := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "flaky__stubborn",
			Arguments: map[string]any{"name": "cut", "text": "y", "ms": 2000}})
		dropped <- res
	}()
	cut := approveNext(t, page, key)
	waitUpstream(t, flakyRecord, upstreamtest.Stubborn, upstreamtest.EventCalled)
	srv.CloseClientConnections()
	if res := <-dropped; res == nil || !res.IsError || !strings.Contains(servertest.ResultText(res), "outcome is unknown") {
		t.Fatalf("a dropped call answered %+v", res)
	}
	if r := waitState(t, p, cut, vocab.StateInterrupted); strings.Contains(r.Reason, "call_timeout") {
		t.Errorf("the dropped call was waited out, not dropped: %s", r.Reason)
	}

	for _, id := range []string{task.TaskId, cut} {
		kinds := kindsOf(t, p.stack, id)
		if n := len(kinds); n == 0 || kinds[n-1] != vocab.KindCallInterrupted || slices.Contains(kinds, vocab.KindCallFailed) {
			t.Errorf("log of %s: %v, want it to end call.interrupted and never call.failed", id, kinds)
		}
	}

	// A person finds out, and says so once.
	dir := p.cfg.Server.DataDir
	if out, errOut, code := cli(t, dir, "calls", "interrupted"); code != 0 || !strings.Contains(out, task.TaskId) || !strings.Contains(out, cut) {
		t.Fatalf("calls interrupted: exit %d %s %s", code, out, errOut)
	}
	if _, errOut, code := cli(t, dir, "calls", "reconcile", cut, "--ran", "--did-not-run"); code == 0 || !strings.Contains(errOut, "contradict") {
		t.Errorf("--ran with --did-not-run: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, dir, "calls", "reconcile", cut); code == 0 || !strings.Contains(errOut, "say what you found") {
		t.Errorf("no finding: exit %d %s", code, errOut)
	}
	out, errOut, code := cli(t, dir, "calls", "reconcile", cut, "--did-not-run", "--note", "no note named cut upstream", "--by", "jo")
	if code != 0 || !strings.Contains(out, "reconciled: did not run, reconciled by jo: no note named cut upstream") {
		t.Fatalf("reconcile: exit %d %s %s", code, out, errOut)
	}
	if _, errOut, code := cli(t, dir, "calls", "reconcile", cut, "--ran"); code == 0 || !strings.Contains(errOut, "already reconciled") {
		t.Errorf("second reconcile: exit %d %s", code, errOut)
	}
	if out, _, _ := cli(t, dir, "calls", "interrupted"); strings.Contains(out, cut) || !strings.Contains(out, task.TaskId) {
		t.Errorf("calls interrupted after reconciling %s: %s", cut, out)
	}
	if _, errOut, code := cli(t, dir, "calls", "reconcile", "3f1c4f8e-0000-4000-8000-000000000000", "--ran"); code == 0 || !strings.Contains(errOut, "no approval request") {
		t.Errorf("unknown request: exit %d %s", code, errOut)
	}
	if got, err := page.Get(cut); err != nil || got.State != vocab.StateInterrupted ||
		!strings.Contains(got.Reason, "outcome unknown") || !strings.Contains(got.Reason, "did not run, reconciled by jo") {
		t.Errorf("the approver page shows %+v (%v)", got, err)
	}
	st := status(t, sessionOf(t, p, "agent-a"), cut)
	if st["status"] != "interrupted" || !strings.Contains(toJSON(st["error_description"]), "did not run, reconciled by jo") {
		t.Errorf("approval_status after reconcile: %v", st)
	}

	// The export with the new kind verifies.
	file := filepath.Join(t.TempDir(), "export.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", file)
	pub := strings.TrimSpace(runCLI(t, p.cfg, "audit", "pubkey"))
	if v := runCLI(t, p.cfg, "audit", "verify", file, "--key", pub); !strings.HasPrefix(v, "OK:") {
		t.Fatalf("audit verify: %s", v)
	}
	raw, _ := os.ReadFile(file)
	if !strings.Contains(string(raw), `"kind":"call.reconciled"`) {
		t.Error("the export has no call.reconciled entry")
	}
}

// A routine call (no approval request) whose upstream never answers within
// call_timeout is interrupted like an approved one, and a person settles
// it the same way, naming it #SEQ: the seq of its call.interrupted.
func TestRoutineUpstreamCallWithoutAnAnswerIsInterruptedAndReconciledBySeq(t *testing.T) {
	up, _, record := stubbornUpstream(t, "hostile", 300*time.Millisecond)
	up.DefaultLevel = vocab.LevelLow
	p := startProduct(t, func(c *config.Config) {
		withTaskAgents(c)
		c.Upstreams = []config.Upstream{up}
	})
	ctx := context.Background()
	res := servertest.CallTool(t, sessionOf(t, p, "agent-a"), "hostile__stubborn", map[string]any{"name": "late", "text": "x", "ms": 1500})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "outcome is unknown") {
		t.Fatalf("a routine call past call_timeout answered: %s", servertest.ResultText(res))
	}
	waitUpstream(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled, upstreamtest.EventCancelled, upstreamtest.EventCompleted)

	all, err := p.stack.Audit().Since(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var lost, allowed int64
	for _, e := range all {
		if e.Tool != "hostile__stubborn" {
			continue
		}
		switch {
		case e.RequestID != "" || e.Kind == vocab.KindApprovalRequested:
			t.Fatalf("the routine call raised a request: %+v", e)
		case e.Kind == vocab.KindCallAllowed:
			allowed = e.Seq
		case e.Kind == vocab.KindCallInterrupted:
			lost = e.Seq
		case e.Kind == vocab.KindCallFailed:
			t.Fatalf("the call without an answer is call.failed: %+v", e)
		}
	}
	if lost == 0 || allowed == 0 {
		t.Fatalf("no call.allowed (%d) and call.interrupted (%d) of the routine call", allowed, lost)
	}
	id := fmt.Sprintf("#%d", lost)

	dir := p.cfg.Server.DataDir
	if out, errOut, code := cli(t, dir, "calls", "interrupted"); code != 0 || !strings.Contains(out, id+" ") || !strings.Contains(out, "hostile__stubborn") {
		t.Fatalf("calls interrupted: exit %d %s %s", code, out, errOut)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{id, "--ran", "--did-not-run"}, "contradict"},
		{[]string{id}, "say what you found"},
		{[]string{fmt.Sprintf("#%d", allowed), "--ran"}, "not interrupted"},
		{[]string{"#999999", "--ran"}, "no interrupted call #999999"},
	} {
		if _, errOut, code := cli(t, dir, append([]string{"calls", "reconcile"}, c.args...)...); code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("calls reconcile %v: exit %d %s, want %q", c.args, code, errOut, c.want)
		}
	}
	out, errOut, code := cli(t, dir, "calls", "reconcile", id, "--ran", "--by", "jo", "--note", "the note late is upstream")
	if code != 0 || !strings.Contains(out, id+" hostile__stubborn: reconciled: ran, reconciled by jo: the note late is upstream") {
		t.Fatalf("reconcile %s: exit %d %s %s", id, code, out, errOut)
	}
	// Named again, by the bare number this time.
	if _, errOut, code := cli(t, dir, "calls", "reconcile", strconv.FormatInt(lost, 10), "--did-not-run"); code == 0 || !strings.Contains(errOut, "already reconciled") {
		t.Errorf("second reconcile: exit %d %s", code, errOut)
	}
	if out, _, _ := cli(t, dir, "calls", "interrupted"); strings.Contains(out, id+" ") {
		t.Errorf("calls interrupted after reconciling %s: %s", id, out)
	}
	all, err = p.stack.Audit().Since(ctx, lost, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var found []audit.Entry
	for _, e := range all {
		if e.Kind == vocab.KindCallReconciled {
			found = append(found, e)
		}
	}
	if len(found) != 1 || found[0].InterruptedSeq != lost || found[0].Tool != "hostile__stubborn" || found[0].Agent != "agent-a" {
		t.Fatalf("call.reconciled entries %+v, want one naming seq %d", found, lost)
	}

	verify := func() (string, int) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "export.jsonl")
		runCLI(t, p.cfg, "audit", "export", "--out", file)
		pub := strings.TrimSpace(runCLI(t, p.cfg, "audit", "pubkey"))
		out, errOut, code := cli(t, dir, "audit", "verify", file, "--key", pub)
		return out + errOut, code
	}
	if v, code := verify(); code != 0 || !strings.HasPrefix(v, "OK:") {
		t.Fatalf("audit verify: exit %d %s", code, v)
	}
	// Someone with the server key appends a second finding: the log's
	// signatures hold, and verify refuses it.
	second := found[0]
	second.Seq, second.Time, second.PrevHash, second.Hash, second.Sig, second.V = 0, "", "", "", "", 0
	second.Reason = "reconciled: did not run, reconciled by mallory"
	forged, err := p.stack.Audit().Append(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("seq %d: the call interrupted at seq %d was already reconciled at seq %d", forged.Seq, lost, found[0].Seq)
	if v, code := verify(); code == 0 || !strings.Contains(v, want) {
		t.Fatalf("audit verify of a second call.reconciled: exit %d %s, want %q", code, v, want)
	}
}

// audit tail names the interrupted call a finding without a request settles.
func TestHumanLineNamesTheInterruptedCallAReconcileSettles(t *testing.T) {
	line := humanLine(audit.Entry{Seq: 9, Kind: vocab.KindCallReconciled, Tool: "hostile__stubborn", InterruptedSeq: 4})
	if !strings.Contains(line, "settles=#4") {
		t.Fatalf("line %q does not name the interrupted call", line)
	}
}

func TestApprovedSecretIsNotAtRestInTheDatabaseOnceDelivered(t *testing.T) {
	p := startProduct(t, func(c *config.Config) {
		withTaskAgents(c)
		pollModeFor("read_secret")(c)
	})
	page, key := enrollSoftKey(t, p)
	secret, err := os.ReadFile(filepath.Join(p.cfg.Secrets.Dir, "prod-db-password"))
	if err != nil {
		t.Fatal(err)
	}
	secret = []byte(strings.TrimSpace(string(secret)))
	cs := sessionOf(t, p, "agent-a")
	id := pending(t, cs, "read_secret", map[string]any{"name": "prod-db-password"})
	if approved := approveNext(t, page, key); approved != id {
		t.Fatalf("approved %s, want %s", approved, id)
	}
	out := pollUntil(t, cs, id, "executed")
	if !strings.Contains(toJSON(out["result"]), string(secret)) {
		t.Fatalf("the agent did not get the secret: %v", out)
	}
	// Asked again within the window, it is handed over again.
	if again := status(t, cs, id); !strings.Contains(toJSON(again["result"]), string(secret)) {
		t.Fatalf("second approval_status: %v", again)
	}
	if p.stack.DB().Dialect() == store.PostgreSQL {
		// Its files are the server's: every row of every table instead.
		notInRows(t, p.stack.DB(), secret)
		return
	}
	if _, err := p.stack.DB().ExecContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	// Every file of the data directory: the database, its WAL, and
	// whatever else lives there.
	files, err := os.ReadDir(p.cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(p.cfg.Server.DataDir, f.Name()))
		if err != nil {
			continue // a directory, or a file gone meanwhile
		}
		seen[f.Name()] = true
		if strings.Contains(string(b), string(secret)) {
			t.Errorf("the secret's value is in plain text in %s", f.Name())
		}
	}
	if !seen[store.FileName] {
		t.Fatalf("no %s among %v", store.FileName, seen)
	}
}

// notInRows fails t if any row of any table of db, PostgreSQL's, holds
// secret, as text or (bytea shows as hex) as bytes.
func notInRows(t *testing.T, db *store.DB, secret []byte) {
	t.Helper()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		rows.Scan(&name)
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) == 0 {
		t.Fatal("no tables in the database")
	}
	hexed := hex.EncodeToString(secret)
	for _, table := range tables {
		rows, err := db.Query(`SELECT r::text FROM ` + table + ` r`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var row string
			rows.Scan(&row)
			if strings.Contains(row, string(secret)) || strings.Contains(row, hexed) {
				t.Errorf("the secret's value is in plain text in a row of %s", table)
			}
		}
		rows.Close()
	}
}
