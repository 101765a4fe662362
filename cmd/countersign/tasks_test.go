package main

// MCP tasks end to end: mcp-go's client sends task-augmented tools/call
// and the tasks/* methods over Streamable HTTP and stdio; a human approves
// in Chromium or with a software key on the page; the ledger and the
// verified audit export say how many transfers ran.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/ledger"
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

// taskClient is mcp-go's client on protocol 2025-11-25, recording the
// task status notifications it hears.
type taskClient struct {
	t  *testing.T
	c  *client.Client
	id atomic.Int64

	mu       sync.Mutex
	statuses map[string][]mcp.TaskStatus
	heard    chan struct{} // a notification arrived
}

func newTaskClient(t *testing.T, tr transport.Interface) *taskClient {
	t.Helper()
	tc := &taskClient{t: t, statuses: map[string][]mcp.TaskStatus{}, heard: make(chan struct{}, 100)}
	tc.c = client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	tc.c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != mcp.MethodNotificationTasksStatus {
			return
		}
		id, _ := n.Params.AdditionalFields["taskId"].(string)
		st, _ := n.Params.AdditionalFields["status"].(string)
		tc.mu.Lock()
		tc.statuses[id] = append(tc.statuses[id], mcp.TaskStatus(st))
		tc.mu.Unlock()
		select {
		case tc.heard <- struct{}{}:
		default:
		}
	})
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

func (tc *taskClient) cancel(id string) (*mcp.CancelTaskResult, *mcp.JSONRPCErrorDetails) {
	tc.t.Helper()
	raw, rerr := tc.rpc(tc.t.Context(), string(mcp.MethodTasksCancel), mcp.CancelTaskParams{TaskId: id})
	if rerr != nil {
		return nil, rerr
	}
	var res mcp.CancelTaskResult
	if err := json.Unmarshal(raw, &res); err != nil {
		tc.t.Fatal(err)
	}
	return &res, nil
}

func (tc *taskClient) list() []mcp.Task {
	tc.t.Helper()
	res, err := tc.c.ListTasks(tc.t.Context(), mcp.ListTasksRequest{})
	if err != nil {
		tc.t.Fatalf("tasks/list: %v", err)
	}
	return res.Tasks
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

// waitStatus waits until a status notification for task id says st.
func (tc *taskClient) waitStatus(id string, st mcp.TaskStatus) {
	tc.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		tc.mu.Lock()
		seen := append([]mcp.TaskStatus(nil), tc.statuses[id]...)
		tc.mu.Unlock()
		for _, s := range seen {
			if s == st {
				return
			}
		}
		select {
		case <-tc.heard:
		case <-timeout:
			tc.t.Fatalf("no notifications/tasks/status %s for %s; heard %v", st, id, seen)
		}
	}
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

// checkWorking checks a pending task's tasks/get: working, and the status
// message carries the binding code and the approver URL.
func checkWorking(t *testing.T, got *mcp.GetTaskResult, code, url string) {
	t.Helper()
	if got.Status != mcp.TaskStatusWorking || !strings.Contains(got.StatusMessage, code) || !strings.Contains(got.StatusMessage, url) {
		t.Fatalf("pending task: status %s %q, want working with code %s and %s", got.Status, got.StatusMessage, code, url)
	}
}

// enrollInBrowser enrolls name's key in a new headless Chromium tab with
// a user-verifying virtual authenticator, and returns the tab.
func enrollInBrowser(t *testing.T, s *stack, name string) context.Context {
	t.Helper()
	tab := approvaltest.Tab(t, approvaltest.NewBrowser(t), true)
	link, err := s.approvals.CreateEnrollment(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	approvaltest.Enroll(t, tab, link)
	return tab
}

// enrollSoftKey enrolls a software key for alice on p's page.
func enrollSoftKey(t *testing.T, p *product) (*approvaltest.Page, *approvaltest.SoftKey) {
	t.Helper()
	link, err := p.approvals.CreateEnrollment(context.Background(), "alice")
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

func TestTaskApprovedInBrowserRunsOnceAndIsTheAgentsOwn(t *testing.T) {
	p := startProduct(t, withTaskAgents)
	tab := enrollInBrowser(t, p.stack, "alice")
	a := httpTaskClient(t, p.agent, "agent-a")
	b := httpTaskClient(t, p.agent, "agent-b")

	tools, err := a.c.ListTools(t.Context(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		taskable := tool.Execution != nil && tool.Execution.TaskSupport == mcp.TaskSupportOptional
		switch tool.Name {
		case "transfer", "deploy":
			if !taskable {
				t.Errorf("%s can need a countersignature but does not offer taskSupport optional", tool.Name)
			}
		case "get_balance", "approval_status":
			if taskable {
				t.Errorf("%s never waits for a human but offers tasks", tool.Name)
			}
		}
	}

	before := a.balance()
	task := a.start("transfer", transferArgs(20000))
	if task.Status != mcp.TaskStatusWorking {
		t.Fatalf("a countersigned transfer as a task: %+v, want working at once", task)
	}
	req, err := p.approvals.Get(context.Background(), task.TaskId)
	if err != nil {
		t.Fatalf("the task id is not an auth_req_id: %v", err)
	}
	checkWorking(t, a.mustGet(task.TaskId), req.Code, req.URL)
	a.waitStatus(task.TaskId, mcp.TaskStatusWorking)

	t.Run("another agent cannot see it", func(t *testing.T) {
		if _, rerr := b.get(task.TaskId); rerr == nil || rerr.Message != "task not found" {
			t.Errorf("tasks/get by another agent: %v, want task not found", rerr)
		}
		if _, rerr := b.get("00000000-0000-4000-8000-000000000000"); rerr == nil || rerr.Message != "task not found" {
			t.Errorf("tasks/get of an unknown id: %v", rerr)
		}
		if _, rerr := b.cancel(task.TaskId); rerr == nil || rerr.Message != "task not found" {
			t.Errorf("tasks/cancel by another agent: %v, want task not found", rerr)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if _, rerr := b.rpc(ctx, string(mcp.MethodTasksResult), mcp.TaskResultParams{TaskId: task.TaskId}); rerr == nil || rerr.Message != "task not found" {
			t.Errorf("tasks/result by another agent: %v, want task not found", rerr)
		}
		for _, other := range b.list() {
			if other.TaskId == task.TaskId {
				t.Errorf("tasks/list of another agent lists %s", task.TaskId)
			}
		}
		if got := a.mustGet(task.TaskId); got.Status != mcp.TaskStatusWorking {
			t.Errorf("after another agent's cancel the task is %s", got.Status)
		}
	})

	approvaltest.Approve(t, tab, req.URL)
	res := a.mustResult(task.TaskId)
	if res.IsError {
		t.Fatalf("approved transfer as a task: %s", toolText(res.Content))
	}
	if !strings.Contains(toolText(res.Content), "Acme Supplies") {
		t.Errorf("tasks/result %q is not the transfer's result", toolText(res.Content))
	}
	if res.Meta == nil || res.Meta.AdditionalFields["countersign/approval"] == nil {
		t.Errorf("tasks/result carries no approval token: %+v", res.Meta)
	}
	if got := a.mustGet(task.TaskId); got.Status != mcp.TaskStatusCompleted {
		t.Errorf("after the result tasks/get says %s", got.Status)
	}
	a.waitStatus(task.TaskId, mcp.TaskStatusCompleted)
	if got := a.balance(); got != before-2_000_000 {
		t.Fatalf("operating %d cents after one 20,000.00 transfer from %d", got, before)
	}
	// Asking again returns the same result; nothing runs again.
	if again := a.mustResult(task.TaskId); toolText(again.Content) != toolText(res.Content) {
		t.Errorf("second tasks/result %q differs from the first %q", toolText(again.Content), toolText(res.Content))
	}
	if got := a.balance(); got != before-2_000_000 {
		t.Fatalf("asking for the result again moved money: %d", got)
	}
	var listed bool
	for _, lt := range a.list() {
		listed = listed || lt.TaskId == task.TaskId && lt.Status == mcp.TaskStatusCompleted
	}
	if !listed {
		t.Errorf("tasks/list of its agent lacks the completed %s", task.TaskId)
	}
	if n := len(entriesFor(t, p.stack, "call.executed", task.TaskId)); n != 1 {
		t.Errorf("%d call.executed entries for the task's request, want 1", n)
	}
}

// entriesFor returns the audit entries of kind for request id.
func entriesFor(t *testing.T, s *stack, kind, id string) []string {
	t.Helper()
	var out []string
	for _, e := range entries(t, s, kind) {
		if e.RequestID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

func TestTaskDeniedExpiredCancelledMoveNoMoney(t *testing.T) {
	p := startProduct(t, func(c *config.Config) {
		withTaskAgents(c)
		tr := c.Tools["transfer"]
		tr.Timeout = 2 * time.Second
		c.Tools["transfer"] = tr
	})
	page, key := enrollSoftKey(t, p)
	a := httpTaskClient(t, p.agent, "agent-a")
	before := a.balance()

	t.Run("routine completes at once", func(t *testing.T) {
		task := a.start("transfer", transferArgs(12))
		if task.Status != mcp.TaskStatusCompleted {
			t.Fatalf("a routine transfer as a task: %s, want completed at once", task.Status)
		}
		if res := a.mustResult(task.TaskId); res.IsError || !strings.Contains(toolText(res.Content), "Acme Supplies") {
			t.Fatalf("routine task result: %s", toolText(res.Content))
		}
		before -= 1200
	})

	t.Run("denied", func(t *testing.T) {
		task := a.start("transfer", transferArgs(20000))
		if _, err := page.Decide(task.TaskId, "deny", key); err != nil {
			t.Fatal(err)
		}
		res := a.mustResult(task.TaskId)
		if !res.IsError || !strings.Contains(toolText(res.Content), "denied by alice") {
			t.Fatalf("denied task result: isError=%v %s", res.IsError, toolText(res.Content))
		}
		if got := a.mustGet(task.TaskId); got.Status != mcp.TaskStatusFailed || !strings.Contains(got.StatusMessage, "denied") {
			t.Errorf("denied task: %s %q, want failed saying denied", got.Status, got.StatusMessage)
		}
		a.waitStatus(task.TaskId, mcp.TaskStatusFailed)
	})

	t.Run("expired", func(t *testing.T) {
		task := a.start("transfer", transferArgs(20000))
		res := a.mustResult(task.TaskId) // waits for the expiry
		if !res.IsError || !strings.Contains(toolText(res.Content), "expired") {
			t.Fatalf("expired task result: isError=%v %s", res.IsError, toolText(res.Content))
		}
		if got := a.mustGet(task.TaskId); got.Status != mcp.TaskStatusFailed {
			t.Errorf("expired task is %s, want failed", got.Status)
		}
		if _, err := page.Decide(task.TaskId, "approve", key); err == nil {
			t.Error("an expired task's request was approved")
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		task := a.start("transfer", transferArgs(20000))
		got, rerr := a.cancel(task.TaskId)
		if rerr != nil || got.Status != mcp.TaskStatusCancelled {
			t.Fatalf("tasks/cancel: %+v %v", got, rerr)
		}
		if _, rerr := a.cancel(task.TaskId); rerr == nil {
			t.Error("cancelling a cancelled task succeeded")
		}
		res := a.mustResult(task.TaskId)
		if !res.IsError || !strings.Contains(toolText(res.Content), "cancelled") {
			t.Fatalf("cancelled task result: %s", toolText(res.Content))
		}
		r, err := page.Get(task.TaskId)
		if err != nil || r.State != "cancelled" {
			t.Fatalf("the page shows the cancelled task's request as %+v (%v)", r, err)
		}
		if _, err := page.Decide(task.TaskId, "approve", key); err == nil {
			t.Error("a cancelled task's request was approved")
		}
		if n := len(entriesFor(t, p.stack, "approval.cancelled", task.TaskId)); n != 1 {
			t.Errorf("%d approval.cancelled entries for the cancelled task, want 1", n)
		}
	})

	if got := a.balance(); got != before {
		t.Fatalf("denied, expired and cancelled tasks moved money: %d cents, want %d", got, before)
	}
}

func TestTaskResultCollectedByANewSessionAfterDisconnect(t *testing.T) {
	p := startProduct(t, withTaskAgents)
	page, key := enrollSoftKey(t, p)
	first := httpTaskClient(t, p.agent, "agent-a")
	before := first.balance()
	task := first.start("transfer", transferArgs(20000))
	if err := first.c.Close(); err != nil { // ends the session (DELETE)
		t.Fatal(err)
	}
	if _, err := page.Decide(task.TaskId, "approve", key); err != nil {
		t.Fatal(err)
	}
	second := httpTaskClient(t, p.agent, "agent-a")
	res := second.mustResult(task.TaskId)
	if res.IsError {
		t.Fatalf("result collected by a new session: %s", toolText(res.Content))
	}
	if got := second.balance(); got != before-2_000_000 {
		t.Fatalf("operating %d cents, want exactly one transfer from %d", got, before)
	}
	if n := len(entriesFor(t, p.stack, "call.executed", task.TaskId)); n != 1 {
		t.Errorf("%d call.executed entries, want 1", n)
	}
}

func TestTaskOverStdio(t *testing.T) {
	s := newSite(t, nil)
	cmd := exec.Command(binPath, "serve", "--config", s.path, "--log-format", "json")
	cmd.Dir = repoRoot
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	a := newTaskClient(t, transport.NewIO(stdout, stdin, io.NopCloser(strings.NewReader(""))))
	page := approvaltest.NewPage(pageAddr(t, stderr), crashOrigin)
	key := approvaltest.NewSoftKey(t, "localhost", crashOrigin)
	if err := page.Enroll(strings.TrimSpace(s.cli("approvers", "enroll", "alice")), key); err != nil {
		t.Fatal(err)
	}
	before := a.balance()

	task := a.start("transfer", transferArgs(20000))
	r, err := page.Get(task.TaskId)
	if err != nil {
		t.Fatalf("the task id is not a request on the page: %v", err)
	}
	checkWorking(t, a.mustGet(task.TaskId), r.Code, "/requests/"+task.TaskId)
	// A routine call goes on while the task waits.
	if res := a.call("get_balance", map[string]any{"account": "operating"}); res.IsError {
		t.Fatalf("routine call while a task waits: %s", toolText(res.Content))
	}
	results := make(chan *mcp.TaskResultResult, 1)
	go func() {
		res, rerr := a.result(task.TaskId)
		if rerr != nil {
			t.Errorf("tasks/result: %s", rerr.Message)
		}
		results <- res
	}()
	if _, err := page.Decide(task.TaskId, "approve", key); err != nil {
		t.Fatal(err)
	}
	res := <-results
	if res == nil || res.IsError {
		t.Fatalf("approved task over stdio: %+v", res)
	}
	a.waitStatus(task.TaskId, mcp.TaskStatusCompleted)
	if got := a.balance(); got != before-2_000_000 {
		t.Fatalf("operating %d cents, want exactly one transfer from %d", got, before)
	}

	denied := a.start("transfer", transferArgs(20000))
	if got, rerr := a.cancel(denied.TaskId); rerr != nil || got.Status != mcp.TaskStatusCancelled {
		t.Fatalf("tasks/cancel over stdio: %+v %v", got, rerr)
	}
	a.waitStatus(denied.TaskId, mcp.TaskStatusCancelled)
	if got := a.balance(); got != before-2_000_000 {
		t.Fatalf("a cancelled task moved money: %d", got)
	}
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
		if k == audit.KindCallExecuted {
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
