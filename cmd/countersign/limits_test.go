package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// limitsConfig is the shipped config with transfers in poll mode (a call
// raises its request and returns at once) and the given limits, for agents
// authenticated by the tokens named.
func limitsConfig(t *testing.T, limits config.Limits, agents ...string) *config.Config {
	return testConfig(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		limits.MaxArgBytes, limits.MaxArgDepth = c.Limits.MaxArgBytes, c.Limits.MaxArgDepth
		c.Limits = limits
		for _, a := range agents {
			sum := sha256.Sum256([]byte(a + "-token"))
			c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: a, TokenSHA256: hex.EncodeToString(sum[:])})
		}
	})
}

func agentSession(t *testing.T, base, agent string) *sdk.ClientSession {
	hc := &http.Client{Transport: bearer{agent + "-token", http.DefaultTransport}}
	return connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1, HTTPClient: hc}, protocolVersions[0], nil)
}

// capTransfer needs a human: it raises an approval request.
func capTransfer(t *testing.T, cs *sdk.ClientSession) *sdk.CallToolResult {
	return servertest.CallTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"})
}

func pendingOf(t *testing.T, s *stack, agent string) int {
	n, err := s.Approvals().PendingFor(context.Background(), agent)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPendingRequestsPerAgentAreCapped(t *testing.T) {
	s, base := startHTTP(t, limitsConfig(t, config.Limits{PendingPerAgent: 3, PendingTotal: 100, CallsPerSecond: 1000, CallBurst: 1000}, "greedy", "modest"))
	greedy := agentSession(t, base, "greedy")
	for i := range 3 {
		if res := capTransfer(t, greedy); res.IsError {
			t.Fatalf("request %d: %s", i+1, servertest.ResultText(res))
		}
	}
	res := capTransfer(t, greedy)
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "limits.pending_per_agent (3)") {
		t.Fatalf("fourth request: %s", servertest.ResultText(res))
	}
	if n := pendingOf(t, s, "greedy"); n != 3 {
		t.Fatalf("greedy has %d pending, want 3: the refused call created a request", n)
	}
	if n := len(entries(t, s, vocab.KindApprovalRequested)); n != 3 {
		t.Fatalf("%d approval.requested entries, want 3", n)
	}
	rl := entries(t, s, vocab.KindCallRateLimited)
	if len(rl) != 1 || rl[0].Agent != "greedy" || !strings.HasPrefix(rl[0].Reason, "1 call refused") || !strings.Contains(rl[0].Reason, "pending_per_agent") {
		t.Fatalf("call.rate_limited entries %+v", rl)
	}
	// Another agent is not held back by greedy's share.
	if res := capTransfer(t, agentSession(t, base, "modest")); res.IsError {
		t.Fatalf("another agent: %s", servertest.ResultText(res))
	}
	// Routine calls still run.
	if res := servertest.CallTool(t, greedy, "get_balance", map[string]any{"account": "operating"}); res.IsError {
		t.Fatalf("routine call: %s", servertest.ResultText(res))
	}
}

func TestPendingRequestsInTotalAreCapped(t *testing.T) {
	s, base := startHTTP(t, limitsConfig(t, config.Limits{PendingPerAgent: 2, PendingTotal: 3, CallsPerSecond: 1000, CallBurst: 1000}, "a", "b"))
	a, b := agentSession(t, base, "a"), agentSession(t, base, "b")
	for _, cs := range []*sdk.ClientSession{a, a, b} {
		if res := capTransfer(t, cs); res.IsError {
			t.Fatal(servertest.ResultText(res))
		}
	}
	res := capTransfer(t, b)
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "limits.pending_total (3)") {
		t.Fatalf("fourth request in all: %s", servertest.ResultText(res))
	}
	if n := pendingOf(t, s, "b"); n != 1 {
		t.Fatalf("b has %d pending, want 1", n)
	}
}

func TestCallsPerSecondAreLimitedPerAgent(t *testing.T) {
	s, base := startHTTP(t, limitsConfig(t, config.Limits{PendingPerAgent: 20, PendingTotal: 200, CallsPerSecond: 1, CallBurst: 3}, "fast", "slow"))
	fast := agentSession(t, base, "fast")
	var refused int
	for range 6 {
		res := servertest.CallTool(t, fast, "get_balance", map[string]any{"account": "operating"})
		if res.IsError {
			if !strings.Contains(servertest.ResultText(res), "limits.calls_per_second (1, burst 3)") {
				t.Fatalf("refusal does not name the limit: %s", servertest.ResultText(res))
			}
			refused++
		}
	}
	if refused < 2 {
		t.Fatalf("%d of 6 calls refused at 1/s with burst 3", refused)
	}
	if res := servertest.CallTool(t, agentSession(t, base, "slow"), "get_balance", map[string]any{"account": "operating"}); res.IsError {
		t.Fatalf("another agent's call: %s", servertest.ResultText(res))
	}
	if rl := entries(t, s, vocab.KindCallRateLimited); len(rl) != 1 || rl[0].Agent != "fast" {
		t.Fatalf("call.rate_limited entries %+v", rl)
	}
}

// A flood of calls over the limits grows the log by a bounded number of
// bytes: one call.rate_limited entry (per agent per minute), whatever the
// number of refused calls.
func TestRefusedFloodOverLimitsGrowsTheLogByABoundedAmount(t *testing.T) {
	s, base := startHTTP(t, limitsConfig(t, config.Limits{PendingPerAgent: 2, PendingTotal: 200, CallsPerSecond: 1000, CallBurst: 1000}, "flood"))
	cs := agentSession(t, base, "flood")
	for range 2 {
		if res := capTransfer(t, cs); res.IsError {
			t.Fatal(servertest.ResultText(res))
		}
	}
	size := func() int {
		var b bytes.Buffer
		if err := s.Audit().Export(context.Background(), &b, 0); err != nil {
			t.Fatal(err)
		}
		return b.Len()
	}
	before := size()
	const calls = 200
	for i := range calls {
		if res := capTransfer(t, cs); !res.IsError {
			t.Fatalf("call %d over the cap ran: %s", i, servertest.ResultText(res))
		}
	}
	grown := size() - before
	if grown > 2048 {
		t.Errorf("%d refused calls grew the log by %d bytes; want one bounded entry", calls, grown)
	}
	if rl := entries(t, s, vocab.KindCallRateLimited); len(rl) != 1 {
		t.Errorf("%d call.rate_limited entries for a flood within a minute, want 1", len(rl))
	}
	if n := pendingOf(t, s, "flood"); n != 2 {
		t.Errorf("%d pending after the flood, want 2", n)
	}
	t.Logf("%d refused calls: log grew by %d bytes", calls, grown)
}

// CIBA backchannel requests count against the same caps, and a flood of
// them is one call.rate_limited entry, not a call.denied each.
func TestBackchannelRequestsAreCapped(t *testing.T) {
	p := startCIBA(t, func(c *config.Config) { c.Limits.PendingPerAgent = 2 })
	details := `[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"EUR","amount":"12500.00"},"creditorName":"Globex Logistics"}]`
	form := url.Values{"scope": {"openid"}, "login_hint": {"role:treasury"}, "authorization_details": {details}}
	for i := range 2 {
		if out := p.postForm(t, ciba.PathAuthorize, form); out["status"] != 200.0 {
			t.Fatalf("request %d: %v", i+1, out)
		}
	}
	denied := len(entries(t, p.stack, vocab.KindCallDenied))
	for range 20 {
		out := p.postForm(t, ciba.PathAuthorize, form)
		if out["error"] != "access_denied" || !strings.Contains(fmt.Sprint(out["error_description"]), "limits.pending_per_agent (2)") {
			t.Fatalf("over the cap: %v", out)
		}
	}
	if n := len(entries(t, p.stack, vocab.KindCallDenied)); n != denied {
		t.Errorf("%d call.denied entries for refusals over the cap", n-denied)
	}
	if rl := entries(t, p.stack, vocab.KindCallRateLimited); len(rl) != 1 || rl[0].Agent != "ci-bot" {
		t.Errorf("call.rate_limited entries %+v", rl)
	}
}
