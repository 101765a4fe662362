package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// operatingBalance reads the operating account's balance (minor units) as
// the agent sees it.
func operatingBalance(t *testing.T, cs *sdk.ClientSession) string {
	t.Helper()
	res := servertest.CallTool(t, cs, "get_balance", map[string]any{"account": "operating"})
	if res.IsError {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
	return servertest.ResultText(res)
}

// entries returns the audit log's entries of the given kind.
func entries(t *testing.T, s *stack, kind vocab.Kind) []audit.Entry {
	t.Helper()
	return daemontest.Entries(t, s.Audit(), kind)
}

func streamable(t *testing.T, base string) *sdk.ClientSession {
	return connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
}

func TestSmallTransferRunsAndIsAudited(t *testing.T) {
	s, base := startHTTP(t, testConfig(t, nil))
	cs := streamable(t, base)
	before := operatingBalance(t, cs)
	res := servertest.CallTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 125.5, "currency": "USD"})
	if res.IsError {
		t.Fatalf("small transfer refused: %s", servertest.ResultText(res))
	}
	after := operatingBalance(t, cs)
	if before == after || !strings.Contains(after, "999,874.50") {
		t.Errorf("balance did not move by 125.50: before %s after %s", before, after)
	}
	if len(entries(t, s, vocab.KindCallAllowed)) < 1 || len(entries(t, s, vocab.KindCallExecuted)) < 1 {
		t.Error("allowed + executed entries missing from the audit log")
	}
}

func TestSchemaViolationNamesTheFieldAndIsAudited(t *testing.T) {
	s, base := startHTTP(t, testConfig(t, nil))
	cs := streamable(t, base)
	for _, tc := range []struct {
		args  map[string]any
		field string
	}{
		{map[string]any{"from": "operating", "to": "Acme Supplies", "amount": -5, "currency": "USD"}, "amount"},
		{map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 5, "currency": "DOGE"}, "currency"},
		{map[string]any{"from": "operating", "amount": 5, "currency": "USD"}, "to"},
		{map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 5.001, "currency": "USD"}, "amount"},
	} {
		res := servertest.CallTool(t, cs, "transfer", tc.args)
		if !res.IsError || !strings.Contains(servertest.ResultText(res), tc.field) {
			t.Errorf("%v: result %q does not name %s", tc.args, servertest.ResultText(res), tc.field)
		}
	}
	if got := len(entries(t, s, vocab.KindCallRejected)); got != 4 {
		t.Errorf("%d call.rejected entries, want 4", got)
	}
	if len(entries(t, s, vocab.KindCallExecuted)) != 0 {
		t.Error("a rejected call ran")
	}
}

func TestDenyLevelNeverRuns(t *testing.T) {
	c := testConfig(t, func(c *config.Config) {
		tool := c.Tools["deploy"]
		tool.Level = vocab.LevelDeny
		c.Tools["deploy"] = tool
	})
	s, base := startHTTP(t, c)
	cs := streamable(t, base)
	res := servertest.CallTool(t, cs, "deploy", map[string]any{"service": "api", "version": "1.2.3", "environment": "staging"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "denied by policy") {
		t.Fatalf("deploy at level deny: %s", servertest.ResultText(res))
	}
	if len(entries(t, s, vocab.KindCallDenied)) != 1 || len(entries(t, s, vocab.KindCallExecuted)) != 0 {
		t.Error("deny not audited exactly once, or the backend ran")
	}
	if _, err := os.Stat(c.Server.DataDir + "/deploys.log"); err == nil {
		t.Error("the deploy script ran")
	}
}

// A large transfer waits for a human; with nobody approving it expires and
// the money stays where it was. Progress arrives while it waits.
func TestLargeTransferWaitsReportsProgressAndExpires(t *testing.T) {
	c := testConfig(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Timeout = 2 * time.Second
		c.Tools["transfer"] = tool
	})
	s, base := startHTTP(t, c)
	var mu sync.Mutex
	var progress []string
	var logged []string
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[1], &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
			mu.Lock()
			defer mu.Unlock()
			progress = append(progress, r.Params.Message)
		},
		LoggingMessageHandler: func(_ context.Context, r *sdk.LoggingMessageRequest) {
			mu.Lock()
			defer mu.Unlock()
			b, _ := json.Marshal(r.Params.Data)
			logged = append(logged, string(b))
		},
	})
	if err := cs.SetLoggingLevel(context.Background(), &sdk.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	before := operatingBalance(t, cs)
	params := &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{
		"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"}}
	params.SetProgressToken("t1")
	res, err := cs.CallTool(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "expired") {
		t.Fatalf("large transfer: %s", servertest.ResultText(res))
	}
	if after := operatingBalance(t, cs); after != before {
		t.Errorf("balance moved without approval: %s -> %s", before, after)
	}
	requested := entries(t, s, vocab.KindApprovalRequested)
	if len(requested) != 1 || len(entries(t, s, vocab.KindApprovalExpired)) != 1 {
		t.Errorf("want 1 approval.requested and 1 approval.expired, got %d requested", len(requested))
	}
	for _, e := range entries(t, s, vocab.KindCallExecuted) {
		if e.Tool == "transfer" {
			t.Error("the transfer ran without approval")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(progress) == 0 || !strings.Contains(progress[0], "waiting for approval by") || !strings.Contains(progress[0], "code ") ||
		!strings.Contains(progress[0], "/requests/") {
		t.Errorf("no useful progress while waiting: %q", progress)
	}
	if len(logged) == 0 || !strings.Contains(logged[0], "approval_url") {
		t.Errorf("no log message with the approval URL: %q", logged)
	}
}

// In poll mode the call returns at once with a CIBA auth_req_id, and
// approval_status answers in CIBA terms.
func TestPollModeAnswersInCIBATerms(t *testing.T) {
	c := testConfig(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		c.Approval.PollInterval = time.Hour
	})
	_, base := startHTTP(t, c)
	cs := streamable(t, base)
	res := servertest.CallTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"})
	if res.IsError {
		t.Fatalf("poll-mode call: %s", servertest.ResultText(res))
	}
	var pending struct {
		Status    string `json:"status"`
		ID        string `json:"auth_req_id"`
		ExpiresIn int    `json:"expires_in"`
		Interval  int    `json:"interval"`
		Binding   string `json:"binding_message"`
	}
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &pending); err != nil {
		t.Fatal(err)
	}
	if pending.Status != "authorization_pending" || pending.ID == "" || pending.ExpiresIn <= 0 || pending.Interval != 3600 || pending.Binding == "" {
		t.Fatalf("pending answer %+v", pending)
	}
	status := func() string {
		r := servertest.CallTool(t, cs, "approval_status", map[string]any{"auth_req_id": pending.ID})
		var out struct{ Status string }
		json.Unmarshal([]byte(servertest.ResultText(r)), &out)
		return out.Status
	}
	if got := status(); got != "authorization_pending" {
		t.Errorf("first poll: %s", got)
	}
	if got := status(); got != "slow_down" {
		t.Errorf("immediate second poll: %s, want slow_down", got)
	}
	other := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	if r := servertest.CallTool(t, other, "approval_status", map[string]any{"auth_req_id": "not-a-uuid"}); !r.IsError {
		t.Errorf("malformed auth_req_id accepted: %s", servertest.ResultText(r))
	}
}

func TestFailedBackendIsRecordedAsFailed(t *testing.T) {
	c := testConfig(t, func(c *config.Config) { c.Deploy.Command = []string{"/bin/false", "{service}"} })
	s, base := startHTTP(t, c)
	cs := streamable(t, base)
	res := servertest.CallTool(t, cs, "deploy", map[string]any{"service": "api", "version": "1.2.3", "environment": "staging"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "deploy failed") {
		t.Fatalf("failing deploy: %s", servertest.ResultText(res))
	}
	failed := entries(t, s, vocab.KindCallFailed)
	if len(failed) != 1 || failed[0].Tool != "deploy" || failed[0].Reason == "" {
		t.Errorf("call.failed entries: %+v", failed)
	}
}

// Invariant 8: a secret's value reaches the agent and nowhere else.
func TestSecretValuesNeverReachTheAuditLog(t *testing.T) {
	c := testConfig(t, nil)
	value, err := os.ReadFile(c.Secrets.Dir + "/staging-db-password")
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(value))
	s, base := startHTTP(t, c)
	cs := streamable(t, base)
	res := servertest.CallTool(t, cs, "read_secret", map[string]any{"name": "staging-db-password"})
	if res.IsError || !strings.Contains(servertest.ResultText(res), secret) {
		t.Fatalf("read_secret: %s", servertest.ResultText(res))
	}
	all, err := s.Audit().Since(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), secret) {
			t.Errorf("audit entry %d carries the secret value: %s", e.Seq, b)
		}
	}
	if len(entries(t, s, vocab.KindCallExecuted)) != 1 {
		t.Error("the read was not recorded")
	}
}

// The salami attack: eleven transfers of 9,999 to the same known payee,
// all at once. The shipped policy sums what the agent already moved or has
// waiting, so one runs and the other ten wait for a human.
func TestSplitTransfersInParallelWaitForAHuman(t *testing.T) {
	s, base := startHTTP(t, testConfig(t, func(c *config.Config) {
		tr := c.Tools["transfer"]
		tr.Timeout = 20 * time.Second
		c.Tools["transfer"] = tr
	}))
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 11 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(9999)})
		}()
	}
	daemontest.WaitFor(t, func() bool {
		return len(entries(t, s, vocab.KindApprovalRequested)) == 10 && len(entries(t, s, vocab.KindCallExecuted)) == 1
	})
	for _, e := range entries(t, s, vocab.KindApprovalRequested) {
		if !strings.Contains(e.Reason, "large-or-new-payee") && e.Tool != "transfer" {
			t.Errorf("request %+v", e)
		}
	}
	if n := len(entries(t, s, vocab.KindCallExecuted)); n != 1 {
		t.Errorf("%d transfers ran, want 1", n)
	}
	cancel()
	wg.Wait()
}

// Usage windows survive a restart: they are rebuilt from the audit log.
func TestUsageSurvivesARestart(t *testing.T) {
	c := testConfig(t, nil)
	s1, base1 := startHTTP(t, c)
	cs1 := connect(t, &sdk.StreamableClientTransport{Endpoint: base1 + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	if res := servertest.CallTool(t, cs1, "transfer", transferArgs(9999)); res.IsError {
		t.Fatalf("first 9,999: %s", servertest.ResultText(res))
	}
	cs1.Close()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, base2 := startHTTP(t, c)
	cs2 := connect(t, &sdk.StreamableClientTransport{Endpoint: base2 + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cs2.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(9999)})
	daemontest.WaitFor(t, func() bool { return len(entries(t, s2, vocab.KindApprovalRequested)) == 1 })
}

// A number the agent sends that a double cannot hold is refused through
// the real transport, never approved or paid as another value.
func TestInexactNumbersAreRefusedOverTheWire(t *testing.T) {
	s, base := startHTTP(t, testConfig(t, nil))
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer",
		Arguments: json.RawMessage(`{"from":"operating","to":"Acme Supplies","amount":12345678901234567890,"currency":"USD"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "amount: the number 12345678901234567890 cannot be held exactly") {
		t.Fatalf("result %q", servertest.ResultText(res))
	}
	if n := len(entries(t, s, vocab.KindApprovalRequested)) + len(entries(t, s, vocab.KindCallExecuted)); n != 0 {
		t.Errorf("%d requests or executions for a refused amount", n)
	}
	// Oversized and over-deep arguments are refused the same way.
	deep := strings.Repeat(`{"x":`, 40) + "1" + strings.Repeat("}", 40)
	for _, raw := range []string{
		`{"account":"` + strings.Repeat("a", 70<<10) + `"}`,
		`{"account":` + deep + `}`,
	} {
		res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "get_balance", Arguments: json.RawMessage(raw)})
		if err != nil {
			t.Fatal(err)
		}
		if !res.IsError || !strings.Contains(servertest.ResultText(res), "invalid arguments: ") {
			t.Errorf("%.40s...: %q", raw, servertest.ResultText(res))
		}
	}
	for _, e := range entries(t, s, vocab.KindCallRejected) {
		if len(e.Args) != 0 {
			t.Errorf("a refused call kept %d bytes of arguments", len(e.Args))
		}
	}
}
