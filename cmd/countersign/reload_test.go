package main

// Reload without a restart: the real binary, its mcp.yaml rewritten while
// it serves, then SIGHUP or countersign reload.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// rewrite writes the site's file again with edit applied to what it says.
func (s *site) rewrite(edit func(*config.Config)) {
	s.t.Helper()
	c, err := config.Load(s.path)
	if err != nil {
		s.t.Fatal(err)
	}
	edit(c)
	raw, err := config.Encode(c)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.path, raw, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// hup sends SIGHUP and waits for the reload's log line: "configuration
// reloaded" or "reload refused; …", which it returns.
func (n *node) hup() map[string]any {
	n.s.t.Helper()
	before := len(n.reloadLines())
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		n.s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if lines := n.reloadLines(); len(lines) > before {
			return lines[len(lines)-1]
		}
		if !n.running() {
			n.s.t.Fatalf("the server exited on SIGHUP:\n%s", n.stderr.String())
		}
		if time.Now().After(deadline) {
			n.s.t.Fatalf("no reload outcome 30s after SIGHUP:\n%s", n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *node) reloadLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(n.stderr.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && (line["msg"] == "configuration reloaded" || line["msg"] == "reload refused; the running configuration stays") {
			out = append(out, line)
		}
	}
	return out
}

// policies are the policy_sha256 of each policy.loaded entry, in order.
func (ex *export) policies() []string {
	var out []string
	for _, e := range ex.entries {
		if e.Kind == vocab.KindPolicyLoaded {
			out = append(out, e.PolicySHA256)
		}
	}
	return out
}

// A changed policy is put in force by SIGHUP while a transfer waits for
// its approver: the transfer keeps waiting and, approved, runs under the
// policy that decided it (its entries name that policy); the next call is
// decided by the new one; the log records both policies and verifies.
func TestSIGHUPReloadsPolicyWhileACallWaits(t *testing.T) {
	s := newSite(t, nil)
	n := s.start()
	cs := n.agent()
	checkBalance(t, cs)
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
	id := n.waitPending(1)[0]

	s.rewrite(func(c *config.Config) {
		gb := c.Tools["get_balance"]
		gb.Level = vocab.LevelDeny
		c.Tools["get_balance"] = gb
	})
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload: %v", line)
	}
	n.waitState(id, vocab.StatePending)
	n.decide(id, "approve")
	if res := <-answer; res.IsError {
		t.Fatalf("the waiting transfer, approved after the reload: %s", servertest.ResultText(res))
	}
	if res := servertest.CallTool(t, cs, "get_balance", map[string]any{}); !res.IsError || !strings.Contains(servertest.ResultText(res), "denied by policy") {
		t.Fatalf("get_balance after the reload made it deny: %s", servertest.ResultText(res))
	}

	ex := s.exportAndVerify()
	policies := ex.policies()
	if len(policies) != 2 || policies[0] == policies[1] {
		t.Fatalf("policy.loaded entries: %v, want the start's and the reload's", policies)
	}
	for _, e := range ex.entries {
		switch {
		case e.RequestID == id && decidedEntry(e.Kind):
			if e.PolicySHA256 != policies[0] {
				t.Errorf("%s of the waiting transfer names policy %s, want the one that decided it, %s", e.Kind, e.PolicySHA256, policies[0])
			}
		case e.Kind == vocab.KindCallDenied && e.Tool == "get_balance":
			if e.PolicySHA256 != policies[1] {
				t.Errorf("the denied get_balance names policy %s, want the reloaded %s", e.PolicySHA256, policies[1])
			}
		}
	}
	n.term()
}

// A poll-mode transfer raised under one policy and approved after a
// reload runs with nobody holding its call, from the request as stored:
// every entry of it that names a policy names the one that raised it,
// not the one in force when it ran, and the export verifies.
func TestPollModeRequestApprovedAfterAReloadNamesThePolicyThatRaisedIt(t *testing.T) {
	t.Parallel() // a site and processes of its own
	s := newSite(t, pollModeFor("transfer"))
	n := s.start()
	cs := n.agent()
	if res := servertest.CallTool(t, cs, "transfer", bigTransfer); res.IsError || !strings.Contains(servertest.ResultText(res), "auth_req_id") {
		t.Fatalf("a poll-mode transfer: %s", servertest.ResultText(res))
	}
	id := n.waitPending(1)[0]

	s.rewrite(func(c *config.Config) {
		gb := c.Tools["get_balance"] // another policy; the transfer still needs alice
		gb.Level = vocab.LevelDeny
		c.Tools["get_balance"] = gb
	})
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload: %v", line)
	}
	n.decide(id, "approve")
	n.waitState(id, vocab.StateExecuted)

	ex := s.exportAndVerify()
	policies := ex.policies()
	if len(policies) != 2 || policies[0] == policies[1] {
		t.Fatalf("policy.loaded entries: %v, want the start's and the reload's", policies)
	}
	named := 0
	for _, e := range ex.entries {
		if e.RequestID != id || e.PolicySHA256 == "" {
			continue
		}
		named++
		if e.PolicySHA256 != policies[0] {
			t.Errorf("%s of the transfer names policy %s, want the one that raised it, %s (the reload's is %s)", e.Kind, e.PolicySHA256, policies[0], policies[1])
		}
	}
	if named != 2 { // approval.requested and call.executed
		t.Errorf("%d entries of the transfer name a policy, want 2 (approval.requested, call.executed)", named)
	}
	n.term()
}

func decidedEntry(k vocab.Kind) bool {
	return k == vocab.KindApprovalRequested || k == vocab.KindCallExecuted
}

// A file that does not validate, and one that changes a listen address,
// are refused whole, saying why; the server keeps serving what it had and
// records no new policy. An agent added with agents add is accepted after
// countersign reload, and anonymous callers no longer are.
func TestReloadRefusesBadFilesAndTakesNewAgents(t *testing.T) {
	s := newSite(t, nil)
	n := s.start()
	cs := n.agent()
	good, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}

	broken := strings.Replace(string(good), "shutdown_timeout: ", "shutdown_timeout: soon # ", 1)
	if err := os.WriteFile(s.path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	line := n.hup()
	if line["msg"] != "reload refused; the running configuration stays" || !strings.Contains(line["err"].(string), "shutdown_timeout") {
		t.Fatalf("a broken file: %v", line)
	}
	checkBalance(t, cs)

	os.WriteFile(s.path, good, 0o600)
	// Where public_url points (valid); the server listens on another port.
	s.rewrite(func(c *config.Config) { c.Approval.Listen = "127.0.0.1:8710" })
	out, err := exec.Command(binPath, "reload", "--config", s.path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "approval.listen") || !strings.Contains(string(out), "only with a restart") {
		t.Fatalf("countersign reload of a changed listen address: %v\n%s", err, out)
	}
	if !n.running() {
		t.Fatal("the server exited")
	}
	checkBalance(t, cs)

	os.WriteFile(s.path, good, 0o600)
	token := strings.TrimSpace(s.cli("agents", "add", "ci-bot"))
	if !strings.HasPrefix(token, "cs_") {
		t.Fatalf("agents add printed %q", token)
	}
	// A notification channel too: the next request is announced there.
	heard := make(chan string, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		heard <- string(b)
	}))
	defer hook.Close()
	s.rewrite(func(c *config.Config) {
		c.Notify = append(c.Notify, config.Notify{Type: config.NotifyNtfy, URL: hook.URL + "/approvals", Events: []string{"requested"}})
	})
	if out := s.cli("reload"); !strings.Contains(out, "reloaded") {
		t.Fatalf("countersign reload: %q", out)
	}
	hc := &http.Client{Transport: bearer{token, http.DefaultTransport}}
	bot := connect(t, &sdk.StreamableClientTransport{Endpoint: n.mcp, MaxRetries: -1, HTTPClient: hc}, protocolVersions[0], nil)
	checkBalance(t, bot)
	answer := make(chan *sdk.CallToolResult, 1)
	go func() {
		res, err := bot.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: bigTransfer})
		if err != nil {
			res = &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: err.Error()}}}
		}
		answer <- res
	}()
	select {
	case msg := <-heard:
		if !strings.Contains(msg, "Vendor X") {
			t.Errorf("the reloaded channel heard %q", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the channel a reload added heard nothing of a new request")
	}
	n.decide(n.waitPending(1)[0], "deny")
	if res := <-answer; !res.IsError {
		t.Errorf("a denied transfer: %s", servertest.ResultText(res))
	}
	resp, err := http.Post(n.mcp, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an anonymous caller once an agent is configured: %d, want 401", resp.StatusCode)
	}

	if policies := s.exportAndVerify().policies(); len(policies) != 2 {
		t.Errorf("policy.loaded entries: %d, want the start's and the one reload that took", len(policies))
	}
	n.term()
	if _, err := exec.Command(binPath, "reload", "--config", s.path).CombinedOutput(); err == nil {
		t.Error("countersign reload with no server running succeeded")
	}
}

// A CIBA request raised under one policy, approved after a reload and
// redeemed for its token: its call.executed names the policy that raised
// it, as its approval.requested does.
func TestCIBARequestRedeemedAfterAReloadNamesThePolicyThatRaisedIt(t *testing.T) {
	var cfg *config.Config
	p := startCIBA(t, func(c *config.Config) { cfg = c })
	page, key := enrollSoftKey(t, &product{stack: p.stack, page: p.page})
	details := `[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"EUR","amount":"12500.00"},"creditorName":"Globex Logistics","creditorAccount":{"iban":"DE89370400440532013000"}}]`
	start := p.postForm(t, ciba.PathAuthorize, url.Values{
		"scope": {"openid"}, "login_hint": {"role:treasury"}, "binding_message": {"Pay invoice 2026-118"},
		"authorization_details": {details},
	})
	id, _ := start["auth_req_id"].(string)
	if start["status"] != 200.0 || id == "" {
		t.Fatalf("bc-authorize: %v", start)
	}

	next := *cfg
	next.Tools = maps.Clone(cfg.Tools)
	gb := next.Tools["get_balance"]
	gb.Level = vocab.LevelDeny
	next.Tools["get_balance"] = gb
	if err := p.stack.Reload(context.Background(), &next, daemontest.Logger(t, slog.LevelWarn)); err != nil {
		t.Fatal(err)
	}
	if _, err := page.Decide(id, "approve", key); err != nil {
		t.Fatal(err)
	}
	if r := p.pollToken(t, id, 1); r["access_token"] == nil {
		t.Fatalf("token after the approval: %v", r)
	}

	all, err := p.Audit().Since(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var policies []string
	named := map[vocab.Kind]string{}
	for _, e := range all {
		switch {
		case e.Kind == vocab.KindPolicyLoaded:
			policies = append(policies, e.PolicySHA256)
		case e.RequestID == id && e.PolicySHA256 != "":
			named[e.Kind] = e.PolicySHA256
		}
	}
	if len(policies) != 2 || policies[0] == policies[1] {
		t.Fatalf("policy.loaded entries: %v, want the start's and the reload's", policies)
	}
	for _, k := range []vocab.Kind{vocab.KindApprovalRequested, vocab.KindCallExecuted} {
		if named[k] != policies[0] {
			t.Errorf("%s of the CIBA request names policy %q, want the one that raised it, %s (the reload's is %s)", k, named[k], policies[0], policies[1])
		}
	}
}
