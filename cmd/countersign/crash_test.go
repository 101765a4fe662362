package main

// Crash tests: the real binary, killed with SIGKILL at the points an
// operator's bad day would pick, then started again on the same data
// directory. After each restart the requests must be in the states the
// guard promises (package guard, "Crashes and restarts"), the export must
// verify, every ledger transfer must have exactly one call.executed entry,
// every call the agent saw succeed must be in the log, and nothing may
// have run twice.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The approver page's name in these tests. The page listens on a random
// port; approvaltest.Page sends there with this Host and Origin.
const crashOrigin = "http://localhost:8710"

var crashBin struct {
	once sync.Once
	path string
	err  error
}

// crashBinary is the countersign binary built with -tags crashtest: the
// same program plus a hook that can hold a call between the backend's
// commit and its audit record (internal/daemon/crashhook_crashtest.go).
func crashBinary(t *testing.T) string {
	t.Helper()
	crashBin.once.Do(func() {
		crashBin.path = filepath.Join(filepath.Dir(binPath), "countersign-crashtest")
		build := exec.Command("go", "build", "-tags", "crashtest", "-o", crashBin.path, ".")
		var out bytes.Buffer
		build.Stderr = &out
		if err := build.Run(); err != nil {
			crashBin.err = fmt.Errorf("building the crashtest binary: %v\n%s", err, out.String())
		}
	})
	if crashBin.err != nil {
		t.Fatal(crashBin.err)
	}
	return crashBin.path
}

// site is a data directory and the config file that points at it; nodes
// (processes) come and go on it.
type site struct {
	t    *testing.T
	cfg  *config.Config
	path string // config file
	key  *approvaltest.SoftKey
	bin  string // the binary nodes run; "" is the crashtest binary
	// nodes are the processes started on the site, for awaitDead.
	nodes []*node
}

func newSite(t *testing.T, edit func(*config.Config)) *site {
	t.Helper()
	c := testConfig(t, func(c *config.Config) {
		c.Approval.PublicURL = crashOrigin
		c.Approval.Origins = []string{crashOrigin}
		c.Approval.AllowedHosts = []string{"localhost:8710"}
		c.Approval.RPID = "localhost"
		c.Server.ShutdownTimeout = 10 * time.Second
		if edit != nil {
			edit(c)
		}
	})
	raw, err := config.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mcp.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return &site{t: t, cfg: c, path: path}
}

// cli runs a countersign command against the site and returns stdout.
func (s *site) cli(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(binPath, append(args, "--config", s.path)...)
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("countersign %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

// node is one countersign process serving the site over HTTP.
type node struct {
	s      *site
	cmd    *exec.Cmd
	stderr *syncBuffer
	mcp    string // Streamable HTTP endpoint
	owner  string // its replica id, on PostgreSQL
	page   *approvaltest.Page
	done   chan error
}

// start runs the binary on the site and waits until it serves. env adds
// variables (the crash hook's).
func (s *site) start(env ...string) *node {
	s.t.Helper()
	return s.startWith(nil, env...)
}

// serveCmd is the command line of serve on the site, plus args.
func (s *site) serveCmd(args []string, env ...string) *exec.Cmd {
	bin := s.bin
	if bin == "" {
		bin = crashBinary(s.t)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--http", "127.0.0.1:0", "--config", s.path, "--log-format", "json"}, args...)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// startWith is start with more serve flags.
func (s *site) startWith(args []string, env ...string) *node {
	s.t.Helper()
	s.awaitDead()
	cmd := s.serveCmd(args, env...)
	n := &node{s: s, cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	s.nodes = append(s.nodes, n)
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { n.done <- cmd.Wait() }()
	s.t.Cleanup(func() { n.kill() })
	var pageAddr string
	deadline := time.Now().Add(60 * time.Second)
	for n.mcp == "" {
		select {
		case err := <-n.done:
			n.done <- err
			s.t.Fatalf("countersign exited before serving: %v\n%s", err, n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("countersign did not start serving within 60s:\n%s", n.stderr.String())
		}
		sc := bufio.NewScanner(strings.NewReader(n.stderr.String()))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line["msg"] {
			case "approver page":
				pageAddr, _ = line["listen"].(string)
			case "serving MCP over HTTP":
				n.mcp, _ = line["streamable"].(string)
			case "replica":
				n.owner, _ = line["id"].(string)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.page = approvaltest.NewPage(pageAddr, crashOrigin)
	if s.key == nil {
		key := approvaltest.NewSoftKey(s.t, "localhost", crashOrigin)
		link := strings.TrimSpace(s.cli("approvers", "enroll", "alice"))
		if err := n.page.Enroll(link, key); err != nil {
			s.t.Fatal(err)
		}
		s.key = key
	}
	return n
}

// awaitDead waits, when the site's database is the PostgreSQL one the
// test pass put in place of its file (storetest.EnvStore), until the
// site's nodes that ended without releasing their replica (killed,
// crashed) are dead to the others: their lock free and their row older
// than the grace. A process started on the SQLite file after a crash
// settles at once what the dead one left; a replica started within the
// grace leaves it to the reaper, which the replicas tests cover.
func (s *site) awaitDead() {
	s.t.Helper()
	if storetest.Dialect() != store.PostgreSQL || s.cfg.Store.URL != storetest.Target(s.t, filepath.Join(s.cfg.Server.DataDir, store.FileName)) {
		return
	}
	var gone []string
	for _, n := range s.nodes {
		if n.owner != "" && n.cmd.ProcessState != nil {
			gone = append(gone, n.owner)
		}
	}
	if len(gone) == 0 {
		return
	}
	db := storetest.Connect(s.t, s.cfg.Store.URL)
	defer db.Close()
	owners, err := store.OwnersFor(context.Background(), db, store.OwnerOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, id := range gone {
		var held bool // its row is there: it ended without releasing it
		if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM replicas WHERE id = ?)`, id).Scan(&held); err != nil {
			s.t.Fatal(err)
		}
		if held {
			waitFor(s.t, "replica "+id+" to be dead to the others", func() bool { return owners.Dead(id) })
		}
	}
}

// kill ends the process with SIGKILL, as the operator did.
func (n *node) kill() {
	if n.cmd.ProcessState != nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	if err := <-n.done; err != nil {
		n.done <- err
	}
}

// term sends SIGTERM and waits for a clean exit.
func (n *node) term() {
	n.s.t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
		if err != nil {
			n.s.t.Fatalf("exit after SIGTERM: %v\n%s", err, n.stderr.String())
		}
	case <-time.After(30 * time.Second):
		n.s.t.Fatalf("still running 30s after SIGTERM:\n%s", n.stderr.String())
	}
}

// agent connects an MCP client to the node.
func (n *node) agent() *sdk.ClientSession {
	n.s.t.Helper()
	return connect(n.s.t, &sdk.StreamableClientTransport{Endpoint: n.mcp, MaxRetries: -1}, protocolVersions[0], nil)
}

// decide taps approve or deny on the approver page with the site's key.
func (n *node) decide(id, decision string) *approvaltest.Request {
	n.s.t.Helper()
	r, err := n.page.Decide(id, decision, n.s.key)
	if err != nil {
		n.s.t.Fatalf("%s %s: %v", decision, id, err)
	}
	return r
}

// waitPending waits until the page lists n pending requests and returns
// their ids.
func (n *node) waitPending(count int) []string {
	n.s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids, err := n.page.Pending()
		if err != nil {
			n.s.t.Fatal(err)
		}
		if len(ids) >= count {
			return ids
		}
		if time.Now().After(deadline) {
			n.s.t.Fatalf("%d requests pending after 30s, want %d", len(ids), count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits until the page shows the request in state.
func (n *node) waitState(id string, state vocab.State) *approvaltest.Request {
	n.s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := n.page.Get(id)
		if err != nil {
			n.s.t.Fatal(err)
		}
		if r.State == state {
			return r
		}
		if time.Now().After(deadline) {
			n.s.t.Fatalf("request %s is %s (%s), want %s", id, r.State, r.Reason, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// status calls approval_status as the agent and returns its answer.
func status(t *testing.T, cs *sdk.ClientSession, id string) map[string]any {
	t.Helper()
	res := servertest.CallTool(t, cs, "approval_status", map[string]any{"auth_req_id": id})
	var out map[string]any
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || res.IsError {
		t.Fatalf("approval_status: %s (%v)", servertest.ResultText(res), err)
	}
	return out
}

// pollUntil asks approval_status, at the interval it asks for, until the
// status is one of want.
func pollUntil(t *testing.T, cs *sdk.ClientSession, id string, want ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := status(t, cs, id)
		st, _ := out["status"].(string)
		for _, w := range want {
			if st == w {
				return out
			}
		}
		if st != "authorization_pending" && st != "slow_down" && st != "approved" {
			t.Fatalf("approval_status %s: %v, want %v", id, out, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("approval_status %s still %v after 60s", id, out)
		}
		time.Sleep(time.Second)
	}
}

// pending calls a tool that waits in poll mode and returns its auth_req_id.
func pending(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	res := servertest.CallTool(t, cs, tool, args)
	var out struct {
		Status string `json:"status"`
		ID     string `json:"auth_req_id"`
	}
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || out.Status != "authorization_pending" {
		t.Fatalf("%s in poll mode: %s (%v)", tool, servertest.ResultText(res), err)
	}
	return out.ID
}

// export is the site's audit log, exported and verified with the CLI.
type export struct {
	entries []audit.Entry
}

// exportAndVerify runs `audit export` and `audit verify` (the server must
// be stopped or serving; either works) and returns the entries.
func (s *site) exportAndVerify() *export {
	s.t.Helper()
	file := filepath.Join(s.t.TempDir(), "export.jsonl")
	s.cli("audit", "export", "--out", file)
	key := strings.TrimSpace(s.cli("audit", "pubkey"))
	out := s.cli("audit", "verify", file, "--key", key)
	if !strings.HasPrefix(out, "OK:") {
		s.t.Fatalf("audit verify: %s", out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		s.t.Fatal(err)
	}
	ex := &export{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var e audit.Entry
		if json.Unmarshal(line, &e) == nil && e.Kind != "" {
			ex.entries = append(ex.entries, e)
		}
	}
	return ex
}

// argsOf is e's arguments, from the entry that holds them: e itself, or
// (audit format 3) the call.allowed its args_seq names.
func (ex *export) argsOf(t *testing.T, e audit.Entry) json.RawMessage {
	t.Helper()
	if e.ArgsSeq == 0 {
		return e.Args
	}
	for _, a := range ex.entries {
		if a.Seq == e.ArgsSeq {
			return a.Args
		}
	}
	t.Fatalf("args_seq %d of %s is not in the export", e.ArgsSeq, e.Kind)
	return nil
}

func (ex *export) kinds(requestID string) []vocab.Kind {
	var out []vocab.Kind
	for _, e := range ex.entries {
		if e.RequestID == requestID {
			out = append(out, e.Kind)
		}
	}
	return out
}

// executed counts call.executed entries by the transfer they made
// (idempotent replays name a transfer another call made, and are not
// counted).
func (ex *export) executedTransfers() map[string]int {
	out := map[string]int{}
	for _, e := range ex.entries {
		if e.Kind != vocab.KindCallExecuted || e.Tool != "transfer" {
			continue
		}
		var rec struct {
			TransferID string `json:"transfer_id"`
			Replay     bool   `json:"idempotent_replay"`
		}
		if json.Unmarshal(e.Result, &rec) == nil && rec.TransferID != "" && !rec.Replay {
			out[rec.TransferID]++
		}
	}
	return out
}

// ledgerTransfers reads the ledger's transfers (id -> call id) from the
// database file; the server must be stopped.
func (s *site) ledgerTransfers() map[string]string {
	s.t.Helper()
	db := storetest.Connect(s.t, filepath.Join(s.cfg.Server.DataDir, store.FileName))
	defer db.Close()
	rows, err := db.Query(`SELECT id, COALESCE(call_id, '') FROM ledger_transfers`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, call string
		if err := rows.Scan(&id, &call); err != nil {
			s.t.Fatal(err)
		}
		out[id] = call
	}
	return out
}

// checkLedgerAgainstLog: every transfer in the ledger has exactly one
// call.executed entry, and every such entry names a transfer the ledger
// holds.
func checkLedgerAgainstLog(t *testing.T, ledger map[string]string, ex *export) {
	t.Helper()
	executed := ex.executedTransfers()
	for id, call := range ledger {
		if n := executed[id]; n != 1 {
			t.Errorf("transfer %s (call %s) has %d call.executed entries, want 1", id, call, n)
		}
	}
	for id := range executed {
		if _, ok := ledger[id]; !ok {
			t.Errorf("the log records transfer %s, which the ledger does not hold", id)
		}
	}
}

// checkEveryCallHasOutcome: every routine call.allowed has an outcome
// entry (executed, failed or interrupted) of its own for the same agent,
// tool and arguments. (A pure read is recorded once, after it ran: an
// outcome with no call.allowed.)
func checkEveryCallHasOutcome(t *testing.T, ex *export) {
	t.Helper()
	for k, n := range ex.openRoutineCalls() {
		t.Errorf("%d more call.allowed than outcomes for %q", n, k)
	}
}

// openRoutineCalls counts, by agent, tool and arguments, the routine
// call.allowed entries that have no outcome yet.
func (ex *export) openRoutineCalls() map[string]int {
	open := map[string]int{}
	for _, e := range ex.entries {
		if e.RequestID != "" {
			continue
		}
		k := e.Agent + "\x00" + e.Tool + "\x00" + e.ArgsSHA256
		switch e.Kind {
		case vocab.KindCallAllowed:
			open[k]++
		case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
			open[k]--
		}
	}
	for k, n := range open {
		if n <= 0 {
			delete(open, k)
		}
	}
	return open
}

func pollModeFor(tools ...string) func(*config.Config) {
	return func(c *config.Config) {
		for _, name := range tools {
			tc := c.Tools[name]
			tc.Wait = "poll"
			c.Tools[name] = tc
		}
	}
}

// A large transfer to a new payee needs alice (role treasury).
var bigTransfer = map[string]any{"from": "operating", "to": "Vendor X", "amount": 50000, "currency": "USD"}

func TestKillWithBlockModeRequestsPending(t *testing.T) {
	s := newSite(t, nil)
	n := s.start()
	cs := n.agent()
	for range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer}) // dies with the server
		}()
	}
	ids := n.waitPending(3)
	n.kill()

	n = s.start()
	for _, id := range ids {
		r := n.waitState(id, "cancelled")
		if r.Reason != "server restarted" {
			t.Errorf("request %s cancelled with reason %q", id, r.Reason)
		}
		if _, err := n.page.Decide(id, "approve", s.key); err == nil || !strings.Contains(err.Error(), "not_pending") {
			t.Errorf("approving %s after the restart: %v", id, err)
		}
	}
	if left, _ := n.page.Pending(); len(left) != 0 {
		t.Errorf("still pending after restart: %v", left)
	}
	n.kill()
	ex := s.exportAndVerify()
	for _, id := range ids {
		want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalCancelled}
		if got := ex.kinds(id); !slices.Equal(got, want) {
			t.Errorf("log of %s: %v, want %v", id, got, want)
		}
	}
	if l := s.ledgerTransfers(); len(l) != 0 {
		t.Errorf("the ledger holds %d transfers; none was approved", len(l))
	}
}

func TestPollModeRequestResumesAfterKillAndRunsOnce(t *testing.T) {
	s := newSite(t, pollModeFor("transfer"))
	n := s.start()
	id := pending(t, n.agent(), "transfer", bigTransfer)
	n.waitPending(1)
	n.kill()

	n = s.start()
	if r := n.waitState(id, "pending"); r.Reason != "" {
		t.Fatalf("poll-mode request after restart: %+v", r)
	}
	n.decide(id, "approve")
	cs := n.agent()
	out := pollUntil(t, cs, id, "executed")
	result, _ := out["result"].(map[string]any)
	if result["status"] != "completed" || result["call_id"] != "request:"+id {
		t.Fatalf("result after restart: %v", out)
	}
	// The agent still gets the result from another process.
	n.kill()
	n = s.start()
	again := status(t, n.agent(), id)
	if again["status"] != "executed" || fmt.Sprint(again["result"]) != fmt.Sprint(result) {
		t.Fatalf("after a second restart approval_status says %v", again)
	}
	n.kill()
	ex := s.exportAndVerify()
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
	if got := ex.kinds(id); !slices.Equal(got, want) {
		t.Errorf("log of %s: %v, want %v", id, got, want)
	}
	ledger := s.ledgerTransfers()
	if len(ledger) != 1 || ledger[result["transfer_id"].(string)] != "request:"+id {
		t.Errorf("ledger %v, want the one transfer of request %s", ledger, id)
	}
	checkLedgerAgainstLog(t, ledger, ex)
}

// deployScript is a deploy command that records each start and then
// takes its time, so a test can kill the server while it runs.
func deployScript(t *testing.T) (path, runs string) {
	t.Helper()
	dir := t.TempDir()
	runs = filepath.Join(dir, "runs")
	path = filepath.Join(dir, "deploy.sh")
	script := "#!/bin/sh\necho \"$$ $*\" >> " + runs + "\nsleep 20\necho finished\n"
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The script outlives a killed server (its own process group).
		raw, _ := os.ReadFile(runs)
		for _, line := range strings.Split(string(raw), "\n") {
			if pid, err := strconv.Atoi(strings.Fields(line + " x")[0]); err == nil {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	return path, runs
}

func lines(t *testing.T, path string) int {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(raw), "\n")
}

// Deploys running when the server is killed: one approved (production),
// one routine (staging). Neither can tell whether it acted.
func TestKillWhileDeploysRun(t *testing.T) {
	script, runs := deployScript(t)
	s := newSite(t, func(c *config.Config) {
		c.Deploy.Command = []string{script, "{service}", "{version}", "{environment}"}
		pollModeFor("deploy")(c)
	})
	n := s.start()
	cs := n.agent()
	id := pending(t, cs, "deploy", map[string]any{"service": "api", "version": "1.4.2", "environment": "production"})
	n.decide(id, "approve")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs.CallTool(ctx, &sdk.CallToolParams{Name: "deploy", Arguments: map[string]any{
			"service": "web", "version": "1.4.2", "environment": "staging"}}) // dies with the server
	}()
	deadline := time.Now().Add(30 * time.Second)
	for lines(t, runs) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the approved deploy never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.kill()

	n = s.start()
	r := n.waitState(id, "interrupted")
	if !strings.Contains(r.Reason, "not run again") {
		t.Errorf("page reason %q", r.Reason)
	}
	out := status(t, n.agent(), id)
	if out["status"] != "interrupted" || !strings.Contains(fmt.Sprint(out["error_description"], out["result"]), "unknown") {
		t.Errorf("approval_status after the restart: %v", out)
	}
	time.Sleep(time.Second) // a rerun would have started by now
	if got := lines(t, runs); got != 2 {
		t.Errorf("the deploy command started %d times for two deploys", got)
	}
	n.kill()
	ex := s.exportAndVerify()
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallInterrupted}
	if got := ex.kinds(id); !slices.Equal(got, want) {
		t.Errorf("log of %s: %v, want %v", id, got, want)
	}
	var routine []vocab.Kind
	for _, e := range ex.entries {
		if e.Tool == "deploy" && e.RequestID == "" {
			routine = append(routine, e.Kind)
			if e.Kind == vocab.KindCallInterrupted && !strings.Contains(string(ex.argsOf(t, e)), "staging") {
				t.Errorf("call.interrupted does not name the call's arguments: %+v", e)
			}
		}
	}
	if !slices.Equal(routine, []vocab.Kind{vocab.KindCallAllowed, vocab.KindCallInterrupted}) {
		t.Errorf("log of the routine deploy: %v, want call.allowed then call.interrupted", routine)
	}
}

// A transfer whose ledger row committed, killed before its record: the
// routine kind (its call.allowed is all the log has) and the countersigned
// kind (approved, claimed, paid).
func TestKillBetweenTransferCommitAndRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"routine", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 12.5, "currency": "USD"}},
		{"countersigned", bigTransfer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, pollModeFor("transfer"))
			hold := t.TempDir()
			n := s.start("COUNTERSIGN_CRASHTEST_HOLD=transfer", "COUNTERSIGN_CRASHTEST_DIR="+hold)
			cs := n.agent()
			var id string
			if tc.name == "routine" {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: tc.args}) // held, then killed
				}()
			} else {
				id = pending(t, cs, "transfer", tc.args)
				n.decide(id, "approve")
			}
			held := filepath.Join(hold, "held")
			deadline := time.Now().Add(30 * time.Second)
			for {
				if _, err := os.Stat(held); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the transfer was never held:\n%s", n.stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			n.kill()
			before := s.exportAndVerify()
			if got := len(before.executedTransfers()); got != 0 {
				t.Fatalf("the log has %d call.executed entries before the restart; the hook did not hold", got)
			}

			n = s.start()
			if id != "" {
				out := pollUntil(t, n.agent(), id, "executed")
				if res, _ := out["result"].(map[string]any); res["call_id"] != "request:"+id {
					t.Errorf("approval_status after restart: %v", out)
				}
			}
			n.kill()
			ex := s.exportAndVerify()
			ledger := s.ledgerTransfers()
			if len(ledger) != 1 {
				t.Fatalf("ledger %v, want one transfer", ledger)
			}
			checkLedgerAgainstLog(t, ledger, ex)
			checkEveryCallHasOutcome(t, ex)
			for _, e := range ex.entries {
				if e.Kind != vocab.KindCallExecuted || e.Tool != "transfer" {
					continue
				}
				if !strings.HasPrefix(e.Reason, "recorded at start") {
					t.Errorf("call.executed does not say it was recorded at start: %q", e.Reason)
				}
				if tc.name == "routine" && (e.Agent != "anonymous" || !strings.Contains(string(ex.argsOf(t, e)), "Acme Supplies")) {
					t.Errorf("recovered entry lacks the call's agent and arguments: %+v", e)
				}
			}
		})
	}
}

func TestKillDuringBurstOfTransfers(t *testing.T) {
	s := newSite(t, nil)
	n := s.start()
	const agents = 8
	burst := 2000 // the burst; kill once this many were acknowledged
	if testing.Short() {
		burst = 300
	}
	var (
		mu    sync.Mutex
		acked = map[string]bool{} // transfer ids the agents were told about
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for a := range agents {
		cs := n.agent()
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{
					"from": "operating", "to": "Acme Supplies", "amount": 0.01, "currency": "USD",
					"memo": fmt.Sprintf("burst %d/%d", a, i),
				}})
				cancel()
				if err != nil {
					return // the server died
				}
				var out struct {
					TransferID string `json:"transfer_id"`
				}
				if !res.IsError && json.Unmarshal([]byte(servertest.ResultText(res)), &out) == nil && out.TransferID != "" {
					mu.Lock()
					acked[out.TransferID] = true
					mu.Unlock()
				}
			}
		})
	}
	// Kill mid-burst, once a good number went through.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		done := len(acked)
		mu.Unlock()
		if done >= burst || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.kill()
	close(stop)
	wg.Wait()

	n = s.start()
	n.kill()
	ex := s.exportAndVerify()
	ledger := s.ledgerTransfers()
	recovered := 0
	for _, e := range ex.entries {
		if e.Kind == vocab.KindCallExecuted && strings.HasPrefix(e.Reason, "recorded at start") {
			recovered++
		}
	}
	t.Logf("%d transfers acknowledged, %d in the ledger, %d recorded at restart", len(acked), len(ledger), recovered)
	if len(acked) < 100 {
		t.Fatalf("only %d transfers before the kill; the burst did not run", len(acked))
	}
	for id := range acked {
		if _, ok := ledger[id]; !ok {
			t.Errorf("acknowledged transfer %s is not in the ledger", id)
		}
	}
	checkLedgerAgainstLog(t, ledger, ex)
	checkEveryCallHasOutcome(t, ex)
	calls := map[string]int{}
	for _, call := range ledger {
		calls[call]++
	}
	for call, k := range calls {
		if k > 1 {
			t.Errorf("call %s made %d transfers", call, k)
		}
	}
}

func TestSIGTERMTellsWaitingAgentsAndKeepsPollMode(t *testing.T) {
	s := newSite(t, pollModeFor("deploy"))
	n := s.start()
	cs := n.agent()
	poll := pending(t, cs, "deploy", map[string]any{"service": "api", "version": "2.0.0", "environment": "production"})
	answer := make(chan *sdk.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer})
		if err != nil {
			res = &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "transport error: " + err.Error()}}}
		}
		answer <- res
	}()
	ids := n.waitPending(2)
	n.term()
	res := <-answer
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "cancelled: server shutting down") {
		t.Fatalf("the waiting agent was told %q", servertest.ResultText(res))
	}
	if !strings.Contains(n.stderr.String(), "shutting down") {
		t.Errorf("no shutdown log:\n%s", n.stderr.String())
	}

	n = s.start()
	var block string
	for _, id := range ids {
		if id != poll {
			block = id
		}
	}
	if r := n.waitState(block, "cancelled"); r.Reason != "server shutting down" {
		t.Errorf("block-mode request cancelled with reason %q", r.Reason)
	}
	n.waitState(poll, "pending")
	n.decide(poll, "approve")
	if out := pollUntil(t, n.agent(), poll, "executed"); fmt.Sprint(out["result"]) == "" {
		t.Errorf("deploy result %v", out)
	}
	n.term()
	s.exportAndVerify()
}
