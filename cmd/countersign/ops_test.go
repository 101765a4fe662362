package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/server/servertest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// scrape reads base/metrics into "name{labels}" -> value, as the text
// format prints them (client_golang sorts labels by name).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func getWithHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// After a routine call, a rejected one and a transfer a human approves in
// the browser, the counters moved by exactly what happened.
func TestMetricsCountWhatHappened(t *testing.T) {
	p := startProduct(t, nil)
	ctx := context.Background()
	tab := enrollInBrowser(t, p.stack, "alice")
	a := newAgent(t, p)

	before := scrape(t, p.page)
	if res := servertest.CallTool(t, a.cs, "get_balance", map[string]any{}); res.IsError {
		t.Fatal(servertest.ResultText(res))
	}
	if res := servertest.CallTool(t, a.cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": -5, "currency": "USD"}); !res.IsError {
		t.Fatal("a negative transfer was not rejected")
	}
	// A tool the catalog does not have is counted, under one label: the
	// name is the agent's, and labels must not grow with what agents send.
	a.cs.CallTool(ctx, &sdk.CallToolParams{Name: "launch_missiles_1234", Arguments: map[string]any{}})
	call := a.start("transfer", transferArgs(20000))
	url, _ := a.approvalURL(t, 1, call)
	if waiting := scrape(t, p.page); waiting["countersign_approvals_pending"] != 1 {
		t.Errorf("pending while one waits: %v", waiting["countersign_approvals_pending"])
	}
	approvaltest.Approve(t, tab, url)
	if res := await(t, call); res.IsError {
		t.Fatalf("approved transfer failed: %s", servertest.ResultText(res))
	}
	approvaltest.WaitText(t, tab, "state", "executed")
	after := scrape(t, p.page)

	want := map[string]float64{
		`countersign_tool_calls_total{outcome="executed",tool="get_balance"}`: 1,
		`countersign_tool_calls_total{outcome="rejected",tool="transfer"}`:    1,
		`countersign_tool_calls_total{outcome="executed",tool="transfer"}`:    1,
		`countersign_tool_calls_total{outcome="rejected",tool="(unknown)"}`:   1,
		`countersign_policy_decision_seconds_count{level="low"}`:              1,
		`countersign_policy_decision_seconds_count{level="high"}`:             1,
		`countersign_approval_requests_total{state="requested"}`:              1,
		`countersign_approval_requests_total{state="approved"}`:               1,
		`countersign_approval_wait_seconds_count{state="approved"}`:           1,
		// get_balance changes nothing: one entry, after it ran.
		`countersign_audit_appends_total{kind="call.allowed"}`:       0,
		`countersign_audit_appends_total{kind="call.rejected"}`:      2,
		`countersign_audit_appends_total{kind="call.executed"}`:      2,
		`countersign_audit_appends_total{kind="approval.requested"}`: 1,
		`countersign_audit_appends_total{kind="approval.assertion"}`: 1,
		`countersign_audit_appends_total{kind="approval.approved"}`:  1,
		`countersign_audit_append_seconds_count`:                     7,
		`countersign_audit_append_errors_total`:                      0,
	}
	for key, delta := range want {
		if got := after[key] - before[key]; got != delta {
			t.Errorf("%s moved by %v, want %v", key, got, delta)
		}
	}
	// Nothing else was counted: every series of these families that moved
	// is one of the above.
	for key, v := range after {
		for _, family := range []string{"countersign_tool_calls_total", "countersign_approval_requests_total", "countersign_audit_appends_total"} {
			if strings.HasPrefix(key, family+"{") && v != before[key] {
				if _, ok := want[key]; !ok {
					t.Errorf("%s moved from %v to %v", key, before[key], v)
				}
			}
		}
	}
	for key, v := range map[string]float64{"countersign_approvals_pending": 0, "countersign_audit_queue_depth": 0} {
		if after[key] != v {
			t.Errorf("%s = %v, want %v", key, after[key], v)
		}
	}
	if after[`countersign_build_info{version="`+buildVersion()+`"}`] != 1 {
		t.Errorf("no build info for %s", buildVersion())
	}

	// The agent listener serves the same registry.
	agentBase := strings.TrimSuffix(p.agent, "/mcp")
	if got := scrape(t, agentBase); got[`countersign_tool_calls_total{outcome="executed",tool="transfer"}`] != after[`countersign_tool_calls_total{outcome="executed",tool="transfer"}`] {
		t.Error("the agent listener's /metrics differs from the page's")
	}
	// A web page reaching the loopback listener through another name (DNS
	// rebinding) cannot read the metrics; a probe can still ask for health.
	if code, _ := getWithHost(t, p.page+"/metrics", "evil.example"); code != http.StatusForbidden {
		t.Errorf("/metrics with a foreign Host: %d, want 403", code)
	}
	if code, body := getWithHost(t, p.page+"/healthz", "10.1.2.3:8710"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}
