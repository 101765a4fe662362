package main

// End-to-end tests of the whole product: an agent on the official go-sdk
// client over Streamable HTTP, the assembled stack, and a human approving on
// the approver page in a real Chromium with virtual security keys.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// product is a running Countersign with its approver page on
// http://localhost:PORT (RP ID localhost).
type product struct {
	*stack
	cfg   *config.Config
	agent string // Streamable HTTP endpoint
	page  string // approver page base URL
	stop  func() // shuts everything down; safe to call twice
}

// startProduct is startHTTP plus the approver page on its own real
// listener. The page's port must be in the config before assemble, so it
// listens first.
func startProduct(t *testing.T, edit func(*config.Config)) *product {
	t.Helper()
	pageLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pageLn.Addr().(*net.TCPAddr).Port
	page := fmt.Sprintf("http://localhost:%d", port)
	c := testConfig(t, func(c *config.Config) {
		c.Approval.PublicURL = page
		c.Approval.Origins = []string{page}
		c.Approval.AllowedHosts = []string{fmt.Sprintf("localhost:%d", port)}
		c.Approval.RPID = "localhost"
		if edit != nil {
			edit(c)
		}
	})
	log := daemontest.Logger(t, slog.LevelWarn)
	s, err := assemble(context.Background(), c, log)
	if err != nil {
		pageLn.Close()
		t.Fatal(err)
	}
	pageSrv := daemon.NewHTTPServer(s.PageHandler(), log)
	go pageSrv.Serve(pageLn)
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + agentLn.Addr().String()
	h, closeSessions := s.AgentHandler(base)
	agentSrv := daemon.NewHTTPServer(h, log)
	go agentSrv.Serve(agentLn)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			closeSessions(ctx)
			agentSrv.Shutdown(ctx)
			// The page holds event streams open; close rather than wait.
			pageSrv.Close()
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &product{stack: s, cfg: c, agent: base + "/mcp", page: page, stop: stop}
}

// agent is one MCP client session that records what the server tells it
// while a call waits.
type agent struct {
	cs   *sdk.ClientSession
	mu   sync.Mutex
	urls []string // approval_url of each "approval required" log message
	ids  []string // auth_req_id of the same
	prog []string // progress notification messages
}

func newAgent(t *testing.T, p *product) *agent {
	t.Helper()
	return newAgentAt(t, p.agent)
}

// newAgentAt connects an agent to the Streamable HTTP endpoint at url.
func newAgentAt(t *testing.T, url string) *agent {
	t.Helper()
	a := &agent{}
	opts := &sdk.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, req *sdk.LoggingMessageRequest) {
			data, _ := req.Params.Data.(map[string]any)
			u, _ := data["approval_url"].(string)
			id, _ := data["auth_req_id"].(string)
			if u == "" {
				return
			}
			a.mu.Lock()
			a.urls, a.ids = append(a.urls, u), append(a.ids, id)
			a.mu.Unlock()
		},
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			a.mu.Lock()
			a.prog = append(a.prog, req.Params.Message)
			a.mu.Unlock()
		},
	}
	a.cs = connect(t, &sdk.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, protocolVersions[0], opts)
	return a
}

type callResult struct {
	res *sdk.CallToolResult
	err error
}

// start calls a tool in the background with a progress token, as an agent
// that waits for a human does.
func (a *agent) start(name string, args map[string]any) <-chan callResult {
	out := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		params := &sdk.CallToolParams{Name: name, Arguments: args}
		params.SetProgressToken("wait-" + name)
		// Under protocol 2026-07-28 a server sends log messages only for a
		// request that declares a level (SEP-2575); the approval URL comes
		// at notice.
		params.Meta[sdk.MetaKeyLogLevel] = "notice"
		res, err := a.cs.CallTool(ctx, params)
		out <- callResult{res, err}
	}()
	return out
}

// approvalURL waits for the n-th (from 1) approval URL the server sent,
// and returns it with its request id.
func (a *agent) approvalURL(t *testing.T, n int, calls ...<-chan callResult) (url, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a.mu.Lock()
		if len(a.urls) >= n {
			url, id = a.urls[n-1], a.ids[n-1]
		}
		a.mu.Unlock()
		if url != "" {
			return url, id
		}
		for _, c := range calls {
			select {
			case r := <-c:
				t.Fatalf("call returned before any approval URL was sent: %s %v", resultOf(r), r.err)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no approval URL among the agent's log messages after 30s (got %d)", n-1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitProgress waits for a progress notification containing s.
func (a *agent) waitProgress(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a.mu.Lock()
		prog := append([]string(nil), a.prog...)
		a.mu.Unlock()
		for _, m := range prog {
			if strings.Contains(m, s) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress notification mentions %q; got %q", s, prog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func resultOf(r callResult) string {
	if r.res == nil {
		return "(no result)"
	}
	return fmt.Sprintf("isError=%v %s", r.res.IsError, servertest.ResultText(r.res))
}

func await(t *testing.T, c <-chan callResult) *sdk.CallToolResult {
	t.Helper()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("call: %v", r.err)
		}
		return r.res
	case <-time.After(60 * time.Second):
		t.Fatal("the agent's call did not return within 60s")
	}
	return nil
}

// operating returns the operating account's balance in cents.
func operating(t *testing.T, a *agent) int64 {
	t.Helper()
	res := servertest.CallTool(t, a.cs, "get_balance", map[string]any{"account": "operating"})
	if res.IsError {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
	var out struct {
		Accounts []struct{ ID, Balance string }
	}
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || len(out.Accounts) != 1 || out.Accounts[0].ID != "operating" {
		t.Fatalf("get_balance result %s (%v)", servertest.ResultText(res), err)
	}
	cents, err := ledger.ParseBalance(out.Accounts[0].Balance, "USD")
	if err != nil {
		t.Fatalf("balance %q: %v", out.Accounts[0].Balance, err)
	}
	return cents
}

func transferArgs(amount int) map[string]any {
	return map[string]any{"from": "operating", "to": "Acme Supplies", "amount": amount, "currency": "USD"}
}

func TestBrowserApproveDenyQuorumThenAuditVerifies(t *testing.T) {
	p := startProduct(t, nil)
	ctx := context.Background()
	browser := approvaltest.NewBrowser(t)
	aliceTab := approvaltest.Tab(t, browser, true)
	bobTab := approvaltest.Tab(t, aliceTab, true)
	for approver, tab := range map[string]context.Context{"alice": aliceTab, "bob": bobTab} {
		link, err := p.Approvals().CreateEnrollment(ctx, approver)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(link, p.page+"/enroll/") {
			t.Fatalf("enrollment link %q is not on the approver page %s", link, p.page)
		}
		approvaltest.Enroll(t, tab, link)
	}
	a := newAgent(t, p)
	before := operating(t, a)
	approvalsSeen := 0

	t.Run("approve", func(t *testing.T) {
		call := a.start("transfer", transferArgs(20000))
		approvalsSeen++
		url, id := a.approvalURL(t, approvalsSeen, call)
		if url != p.page+"/requests/"+id {
			t.Fatalf("approval URL %q, want %s/requests/%s", url, p.page, id)
		}
		req, err := p.Approvals().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if req.Level != "high" || strings.Join(req.Approvers, ",") != "alice,bob" || req.Quorum != 1 {
			t.Errorf("request level %q approvers %v quorum %d, want high [alice bob] 1", req.Level, req.Approvers, req.Quorum)
		}
		a.waitProgress(t, req.Code)
		approvaltest.Open(t, aliceTab, url)
		page := approvaltest.Text(t, aliceTab, "#request")
		for _, want := range []string{"USD 20,000.00", "Acme Supplies", "operating", req.Code} {
			if !strings.Contains(page, want) {
				t.Errorf("request page lacks %q:\n%s", want, page)
			}
		}
		approvaltest.Approve(t, aliceTab, url)
		res := await(t, call)
		if res.IsError {
			t.Fatalf("approved transfer failed: %s", servertest.ResultText(res))
		}
		approvaltest.WaitText(t, aliceTab, "state", "executed") // the result came back, so it ran
		if got := operating(t, a); got != before-2_000_000 {
			t.Fatalf("operating balance %d cents after a 20,000.00 transfer from %d", got, before)
		}
		before -= 2_000_000
	})

	t.Run("deny", func(t *testing.T) {
		call := a.start("transfer", transferArgs(20000))
		approvalsSeen++
		url, id := a.approvalURL(t, approvalsSeen, call)
		approvaltest.Deny(t, bobTab, url)
		res := await(t, call)
		if !res.IsError {
			t.Fatalf("denied transfer did not fail: %s", servertest.ResultText(res))
		}
		if text := servertest.ResultText(res); !strings.Contains(text, "denied by bob") || !strings.Contains(text, id) {
			t.Errorf("deny result %q does not say denied by bob on %s", text, id)
		}
		approvaltest.WaitText(t, bobTab, "state", "denied")
		if got := operating(t, a); got != before {
			t.Fatalf("a denied transfer moved money: %d cents, was %d", got, before)
		}
	})

	t.Run("critical needs alice and bob", func(t *testing.T) {
		call := a.start("transfer", transferArgs(300000))
		approvalsSeen++
		url, id := a.approvalURL(t, approvalsSeen, call)
		req, err := p.Approvals().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if req.Level != "critical" || req.Quorum != 2 {
			t.Fatalf("request level %q quorum %d, want critical 2", req.Level, req.Quorum)
		}
		approvaltest.Approve(t, aliceTab, url)
		approvaltest.WaitText(t, aliceTab, "outcome", "Your approval is counted: 1 of 2")
		select {
		case r := <-call:
			t.Fatalf("one approval of two ended the call: %s %v", resultOf(r), r.err)
		default:
		}
		if got := operating(t, a); got != before {
			t.Fatalf("money moved after one approval of two: %d cents, was %d", got, before)
		}
		approvaltest.Approve(t, bobTab, url)
		res := await(t, call)
		if res.IsError {
			t.Fatalf("transfer approved by both failed: %s", servertest.ResultText(res))
		}
		approvaltest.WaitText(t, aliceTab, "state", "executed") // the result came back, so it ran
		got, err := p.Approvals().Get(ctx, id)
		if err != nil || got.DecidedBy != "alice,bob" {
			t.Fatalf("decided by %q (%v), want alice,bob", got.DecidedBy, err)
		}
		if bal := operating(t, a); bal != before-30_000_000 {
			t.Fatalf("operating balance %d cents after one 300,000.00 transfer from %d", bal, before)
		}
	})

	// The auditor's view: export with the CLI after the server stops, and
	// verify offline with only the public key.
	p.stop()
	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", export)
	key := runCLI(t, p.cfg, "audit", "pubkey")
	keyFile := filepath.Join(dir, "server.pub")
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	summary := runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile, "--replay-policy")
	m := regexp.MustCompile(`(\d+) key assertions verified`).FindStringSubmatch(summary)
	if m == nil {
		t.Fatalf("verify summary %q does not count key assertions", summary)
	}
	// One per tap: alice's approval, bob's deny, both critical approvals.
	if n, _ := strconv.Atoi(m[1]); n < 4 {
		t.Fatalf("verify checked %d key assertions, want at least 4 (one per tap): %s", n, summary)
	}
	// Both approvals met their recorded quorum, and both transfers that
	// ran are tied to them.
	if !strings.Contains(summary, "2 approvals met their quorum, 2 countersigned executions matched their approval") {
		t.Fatalf("verify summary %q does not show 2 approvals and 2 executions checked", summary)
	}
	// Every decision named the policy serve loaded, and replays against it.
	if m := regexp.MustCompile(`(\d+) decisions replayed against their policy`).FindStringSubmatch(summary); m == nil || m[1] == "0" || strings.Contains(summary, "not replayed") {
		t.Fatalf("verify summary %q does not show every decision replayed", summary)
	}
	exported, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(exported)), "\n") {
		var e struct {
			Kind, Tool, Decision string
			UserVerified         bool `json:"user_verified"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		if e.Tool == "transfer" {
			kinds[e.Kind]++
		}
		if e.Kind == "approval.assertion" && !e.UserVerified {
			t.Errorf("assertion without user verification from a UV key: %s", line)
		}
	}
	// Two transfers ran (the approved one and the critical one, once), one
	// was denied, and every request was recorded.
	for kind, want := range map[string]int{"approval.requested": 3, "approval.approved": 2, "approval.denied": 1, "call.executed": 2} {
		if kinds[kind] != want {
			t.Errorf("export has %d transfer %s entries, want %d (all: %v)", kinds[kind], kind, want, kinds)
		}
	}
}

func TestBrowserExpiredApprovalFailsTheCall(t *testing.T) {
	p := startProduct(t, func(c *config.Config) {
		tr := c.Tools["transfer"]
		tr.Timeout = 2 * time.Second
		c.Tools["transfer"] = tr
	})
	tab := approvaltest.Tab(t, approvaltest.NewBrowser(t), true)
	a := newAgent(t, p)
	before := operating(t, a)
	call := a.start("transfer", transferArgs(20000))
	url, id := a.approvalURL(t, 1, call)
	// The approver looks but does not act; the page learns of the expiry.
	approvaltest.Open(t, tab, url)
	res := await(t, call)
	if !res.IsError {
		t.Fatalf("expired transfer did not fail: %s", servertest.ResultText(res))
	}
	if text := servertest.ResultText(res); !strings.Contains(text, "expired") || !strings.Contains(text, id) {
		t.Errorf("expiry result %q does not say %s expired", text, id)
	}
	approvaltest.WaitText(t, tab, "state", "expired")
	if r, err := p.Approvals().Get(context.Background(), id); err != nil || r.State != vocab.StateExpired {
		t.Fatalf("request after expiry: %+v %v", r, err)
	}
	if got := operating(t, a); got != before {
		t.Fatalf("an expired transfer moved money: %d cents, was %d", got, before)
	}
}

// cliCommand is the countersign binary run as runCLI runs it.
func cliCommand(c *config.Config, args ...string) *exec.Cmd {
	cmd := exec.Command(binPath, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "COUNTERSIGN_SERVER_DATA_DIR="+c.Server.DataDir)
	if c.Store.URL != "" {
		cmd.Env = append(cmd.Env, "COUNTERSIGN_STORE_URL="+c.Store.URL)
	}
	return cmd
}

// runCLI runs the built binary against the config's data directory from the
// repository root, fails the test unless it exits 0, and returns stdout.
func runCLI(t *testing.T, c *config.Config, args ...string) string {
	t.Helper()
	cmd := cliCommand(c, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("countersign %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
