package main

// MCP tasks end to end in the binary: a task outlives the process that
// made it. What tasks do within one server (own tasks only, each end of a
// task, stdio, SSE) is tested in package server; the helpers here serve
// the tests of other files too.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// Two agents with their bearer tokens, for the tests that need them.
var taskAgents = map[string]string{"agent-a": "token-of-agent-a", "agent-b": "token-of-agent-b"}

func withTaskAgents(c *config.Config) {
	c.HTTP.Agents = nil
	for id, tok := range taskAgents {
		sum := sha256.Sum256([]byte(tok))
		c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: id, TokenSHA256: hex.EncodeToString(sum[:])})
	}
}

// taskClient is mcp-go's client on protocol 2025-11-25.
type taskClient struct {
	t  *testing.T
	c  *client.Client
	id atomic.Int64
}

func newTaskClient(t *testing.T, tr transport.Interface) *taskClient {
	t.Helper()
	tc := &taskClient{t: t}
	tc.c = client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	ctx := t.Context()
	if err := tc.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	init.Params.ClientInfo = mcp.Implementation{Name: "countersign-task-test", Version: "1"}
	init.Params.Capabilities.Tasks = mcp.NewTasksCapability()
	res, err := tc.c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if res.Capabilities.Tasks == nil || res.Capabilities.Tasks.Requests == nil || res.Capabilities.Tasks.List == nil {
		t.Fatalf("the server does not declare the tasks capability: %+v", res.Capabilities.Tasks)
	}
	t.Cleanup(func() { tc.c.Close() })
	return tc
}

// httpTaskClient connects as agent over Streamable HTTP, with a standing
// stream for notifications.
func httpTaskClient(t *testing.T, url, agent string) *taskClient {
	t.Helper()
	// The bearer goes on every request, the session's closing DELETE too
	// (mcp-go's static headers are not sent with that one).
	hc := &http.Client{Transport: bearer{taskAgents[agent], http.DefaultTransport}}
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc), transport.WithContinuousListening())
	if err != nil {
		t.Fatal(err)
	}
	return newTaskClient(t, tr)
}

// rpc sends one request and returns its result or its JSON-RPC error.
// A task-augmented tools/call goes through the transport: Client.CallTool
// parses every answer as a CallToolResult and refuses a CreateTaskResult,
// which has no content.
func (tc *taskClient) rpc(ctx context.Context, method string, params any) (json.RawMessage, *mcp.JSONRPCErrorDetails) {
	tc.t.Helper()
	// The transport routes answers by id, and the client numbers its own
	// requests 1, 2, ...: ids of its own kind here could collide with one
	// in flight and take its answer.
	resp, err := tc.c.GetTransport().SendRequest(ctx, transport.JSONRPCRequest{
		JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(fmt.Sprintf("task-%d", tc.id.Add(1))), Method: method, Params: params,
	})
	if err != nil {
		tc.t.Fatalf("%s: %v", method, err)
	}
	return resp.Result, resp.Error
}

// start calls tool as a task and returns the task it got at once.
func (tc *taskClient) start(tool string, args map[string]any) mcp.Task {
	tc.t.Helper()
	raw, rerr := tc.rpc(tc.t.Context(), string(mcp.MethodToolsCall),
		mcp.CallToolParams{Name: tool, Arguments: args, Task: &mcp.TaskParams{}})
	if rerr != nil {
		tc.t.Fatalf("%s as a task: %s", tool, rerr.Message)
	}
	var created mcp.CreateTaskResult
	if err := json.Unmarshal(raw, &created); err != nil || created.Task.TaskId == "" {
		tc.t.Fatalf("%s as a task answered %s (%v)", tool, raw, err)
	}
	return created.Task
}

func (tc *taskClient) get(id string) (*mcp.GetTaskResult, *mcp.JSONRPCErrorDetails) {
	tc.t.Helper()
	raw, rerr := tc.rpc(tc.t.Context(), string(mcp.MethodTasksGet), mcp.GetTaskParams{TaskId: id})
	if rerr != nil {
		return nil, rerr
	}
	var res mcp.GetTaskResult
	if err := json.Unmarshal(raw, &res); err != nil {
		tc.t.Fatal(err)
	}
	return &res, nil
}

func (tc *taskClient) mustGet(id string) *mcp.GetTaskResult {
	tc.t.Helper()
	res, rerr := tc.get(id)
	if rerr != nil {
		tc.t.Fatalf("tasks/get %s: %s", id, rerr.Message)
	}
	return res
}

// result asks tasks/result, which waits until the task settles.
func (tc *taskClient) result(id string) (*mcp.TaskResultResult, *mcp.JSONRPCErrorDetails) {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(tc.t.Context(), 90*time.Second)
	defer cancel()
	raw, rerr := tc.rpc(ctx, string(mcp.MethodTasksResult), mcp.TaskResultParams{TaskId: id})
	if rerr != nil {
		return nil, rerr
	}
	res, err := mcp.ParseTaskResultResult(&raw)
	if err != nil {
		tc.t.Fatal(err)
	}
	return res, nil
}

func (tc *taskClient) mustResult(id string) *mcp.TaskResultResult {
	tc.t.Helper()
	res, rerr := tc.result(id)
	if rerr != nil {
		tc.t.Fatalf("tasks/result %s: %s", id, rerr.Message)
	}
	return res
}

// call is an ordinary tools/call.
func (tc *taskClient) call(tool string, args map[string]any) *mcp.CallToolResult {
	tc.t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = tool, args
	res, err := tc.c.CallTool(tc.t.Context(), req)
	if err != nil {
		tc.t.Fatalf("call %s: %v", tool, err)
	}
	return res
}

// balance is the operating account's balance in cents.
func (tc *taskClient) balance() int64 {
	tc.t.Helper()
	res := tc.call("get_balance", map[string]any{"account": "operating"})
	var out struct {
		Accounts []struct{ ID, Balance string }
	}
	if err := json.Unmarshal([]byte(toolText(res.Content)), &out); err != nil || len(out.Accounts) != 1 {
		tc.t.Fatalf("get_balance: %s (%v)", toolText(res.Content), err)
	}
	cents, err := ledger.ParseBalance(out.Accounts[0].Balance, "USD")
	if err != nil {
		tc.t.Fatal(err)
	}
	return cents
}

func toolText(content []mcp.Content) string {
	var b strings.Builder
	for _, c := range content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// enrollInBrowser enrolls name's key in a new headless Chromium tab with
// a user-verifying virtual authenticator, and returns the tab.
func enrollInBrowser(t *testing.T, s *stack, name string) context.Context {
	t.Helper()
	tab := approvaltest.Tab(t, approvaltest.NewBrowser(t), true)
	link, err := s.Approvals().CreateEnrollment(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	approvaltest.Enroll(t, tab, link)
	return tab
}

// enrollSoftKey enrolls a software key for alice on p's page.
func enrollSoftKey(t *testing.T, p *product) (*approvaltest.Page, *approvaltest.SoftKey) {
	t.Helper()
	link, err := p.Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	page := approvaltest.NewPage("127.0.0.1"+strings.TrimPrefix(p.page, "http://localhost"), p.page)
	key := approvaltest.NewSoftKey(t, "localhost", p.page)
	if err := page.Enroll(link, key); err != nil {
		t.Fatal(err)
	}
	return page, key
}

// pageAddr reads the approver page's listen address from a server's JSON
// log on stderr.
func pageAddr(t *testing.T, stderr *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "approver page" {
				return fmt.Sprint(l["listen"])
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no approver page address on stderr:\n%s", stderr.String())
	return ""
}

func TestTaskPendingAcrossKillRunsOnceAfterRestart(t *testing.T) {
	s := newSite(t, nil)
	n := s.start()
	a := httpTaskClient(t, n.mcp, "")
	before := a.balance()
	task := a.start("transfer", transferArgs(20000))
	n.waitPending(1)
	n.kill()

	n = s.start()
	n.waitState(task.TaskId, "pending")
	n.decide(task.TaskId, "approve")
	b := httpTaskClient(t, n.mcp, "")
	res := b.mustResult(task.TaskId)
	if res.IsError {
		t.Fatalf("task result after restart: %s", toolText(res.Content))
	}
	if got := b.mustGet(task.TaskId); got.Status != mcp.TaskStatusCompleted {
		t.Errorf("task after restart and approval: %s", got.Status)
	}
	if got := b.balance(); got != before-2_000_000 {
		t.Fatalf("operating %d cents, want exactly one transfer from %d", got, before)
	}
	n.term()
	ex := s.exportAndVerify()
	var executed int
	for _, k := range ex.kinds(task.TaskId) {
		if k == vocab.KindCallExecuted {
			executed++
		}
	}
	if executed != 1 {
		t.Fatalf("the task's request has %d call.executed entries, want 1: %v", executed, ex.kinds(task.TaskId))
	}
	ledger := s.ledgerTransfers()
	var byTask int
	for _, call := range ledger {
		if call == "request:"+task.TaskId {
			byTask++
		}
	}
	if byTask != 1 {
		t.Fatalf("%d ledger transfers made by the task's request, want 1", byTask)
	}
	checkLedgerAgainstLog(t, ledger, ex)
}
