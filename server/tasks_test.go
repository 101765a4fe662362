package server_test

// MCP tasks: mcp-go's client sends task-augmented tools/call and the
// tasks/* methods over Streamable HTTP; approvers decide with software
// keys; the ledger and the audit log say how many transfers ran.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

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
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(withToken(agentTokens[agent])), transport.WithContinuousListening())
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

// tryStart calls tool as a task.
func (tc *taskClient) tryStart(tool string, args map[string]any) (mcp.Task, *mcp.JSONRPCErrorDetails) {
	tc.t.Helper()
	raw, rerr := tc.rpc(tc.t.Context(), string(mcp.MethodToolsCall),
		mcp.CallToolParams{Name: tool, Arguments: args, Task: &mcp.TaskParams{}})
	if rerr != nil {
		return mcp.Task{}, rerr
	}
	var created mcp.CreateTaskResult
	if err := json.Unmarshal(raw, &created); err != nil || created.Task.TaskId == "" {
		tc.t.Fatalf("%s as a task answered %s (%v)", tool, raw, err)
	}
	return created.Task, nil
}

// start calls tool as a task and returns the task it got at once.
func (tc *taskClient) start(tool string, args map[string]any) mcp.Task {
	tc.t.Helper()
	task, rerr := tc.tryStart(tool, args)
	if rerr != nil {
		tc.t.Fatalf("%s as a task: %s", tool, rerr.Message)
	}
	return task
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

// heardOf returns the statuses heard of task id.
func (tc *taskClient) heardOf(id string) []mcp.TaskStatus {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]mcp.TaskStatus(nil), tc.statuses[id]...)
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

// executed counts the entries of kind for request id.
func (s *stack) count(t *testing.T, kind vocab.Kind, id string) int {
	t.Helper()
	n := 0
	for _, e := range s.entries(t, kind) {
		if e.RequestID == id {
			n++
		}
	}
	return n
}

func TestTaskApprovedRunsOnceAndIsTheAgentsOwn(t *testing.T) {
	s := newStack(t, withAgents)
	url := s.serveHTTP(t) + "/mcp"
	a := httpTaskClient(t, url, "agent-a")
	b := httpTaskClient(t, url, "agent-b")

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
	req, err := s.approvals.Get(context.Background(), task.TaskId)
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

	if err := s.decide(t, task.TaskId, "approve"); err != nil {
		t.Fatal(err)
	}
	res := a.mustResult(task.TaskId)
	if res.IsError {
		t.Fatalf("approved transfer as a task: %s", toolText(res.Content))
	}
	if !strings.Contains(toolText(res.Content), "Acme Supplies") {
		t.Errorf("tasks/result %q is not the transfer's result", toolText(res.Content))
	}
	if res.Meta == nil || res.Meta.AdditionalFields["countersign/approval"] == nil || res.Meta.AdditionalFields[mcp.RelatedTaskMetaKey] == nil {
		t.Errorf("tasks/result carries no approval token or related task: %+v", res.Meta)
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
	if n := s.count(t, vocab.KindCallExecuted, task.TaskId); n != 1 {
		t.Errorf("%d call.executed entries for the task's request, want 1", n)
	}
	// Another agent hears nothing of it.
	if heard := b.heardOf(task.TaskId); len(heard) > 0 {
		t.Errorf("another agent heard the task's status: %v", heard)
	}
}

func TestTaskDeniedExpiredCancelledMoveNoMoney(t *testing.T) {
	s := newStack(t, func(c *config.Config) {
		withAgents(c)
		tr := c.Tools["transfer"]
		tr.Timeout = 2 * time.Second
		c.Tools["transfer"] = tr
	})
	a := httpTaskClient(t, s.serveHTTP(t)+"/mcp", "agent-a")
	before := a.balance()

	t.Run("routine completes at once", func(t *testing.T) {
		task := a.start("transfer", transferArgs(12))
		if task.Status != mcp.TaskStatusCompleted {
			t.Fatalf("a routine transfer as a task: %s, want completed at once", task.Status)
		}
		if res := a.mustResult(task.TaskId); res.IsError || !strings.Contains(toolText(res.Content), "Acme Supplies") {
			t.Fatalf("routine task result: %s", toolText(res.Content))
		}
		if got := a.mustGet(task.TaskId); got.Status != mcp.TaskStatusCompleted {
			t.Errorf("routine task: %s", got.Status)
		}
		var listed bool
		for _, lt := range a.list() {
			listed = listed || lt.TaskId == task.TaskId
		}
		if !listed {
			t.Errorf("tasks/list lacks the routine task %s", task.TaskId)
		}
		if _, rerr := a.cancel(task.TaskId); rerr == nil || !strings.Contains(rerr.Message, "terminal") {
			t.Errorf("cancelling a completed routine task: %v, want refused as terminal", rerr)
		}
		before -= 1200
	})

	t.Run("refused routine call is a failed task", func(t *testing.T) {
		task := a.start("transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 12, "currency": "EUR"})
		if task.Status != mcp.TaskStatusFailed {
			t.Errorf("a refused transfer as a task: %s, want failed", task.Status)
		}
		if res := a.mustResult(task.TaskId); !res.IsError {
			t.Errorf("refused task result is not an error: %s", toolText(res.Content))
		}
	})

	t.Run("denied", func(t *testing.T) {
		task := a.start("transfer", transferArgs(20000))
		if err := s.decide(t, task.TaskId, "deny"); err != nil {
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
		if err := s.decide(t, task.TaskId, "approve"); err == nil {
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
		s.waitState(t, task.TaskId, "cancelled")
		if err := s.decide(t, task.TaskId, "approve"); err == nil {
			t.Error("a cancelled task's request was approved")
		}
		if n := s.count(t, vocab.KindApprovalCancelled, task.TaskId); n != 1 {
			t.Errorf("%d approval.cancelled entries for the cancelled task, want 1", n)
		}
		a.waitStatus(task.TaskId, mcp.TaskStatusCancelled)
	})

	if got := a.balance(); got != before {
		t.Fatalf("denied, expired and cancelled tasks moved money: %d cents, want %d", got, before)
	}
}

func TestTaskRefusals(t *testing.T) {
	s := newStack(t, withAgents)
	a := httpTaskClient(t, s.serveHTTP(t)+"/mcp", "agent-a")

	if _, rerr := a.tryStart("get_balance", map[string]any{}); rerr == nil || rerr.Code != mcp.METHOD_NOT_FOUND ||
		!strings.Contains(rerr.Message, "does not support task augmentation") {
		t.Errorf("a tool that never waits, as a task: %+v, want method not found", rerr)
	}
	if _, rerr := a.tryStart("no_such_tool", map[string]any{}); rerr == nil || rerr.Message != "tool 'no_such_tool' not found" {
		t.Errorf("an unknown tool as a task: %+v", rerr)
	}
	long := strings.Repeat("x", 300)
	if _, rerr := a.tryStart(long, nil); rerr == nil || len(rerr.Message) > 200 {
		t.Errorf("an unknown tool with a long name as a task: %+v, want a bounded message", rerr)
	}
	if es := s.entries(t, vocab.KindCallRejected); len(es) != 2 || es[0].Tool != "no_such_tool" || es[0].Agent != "agent-a" {
		t.Errorf("unknown tools called as tasks were not recorded as rejected: %+v", es)
	}
	for _, method := range []mcp.MCPMethod{mcp.MethodTasksGet, mcp.MethodTasksResult, mcp.MethodTasksCancel} {
		if _, rerr := a.rpc(t.Context(), string(method), map[string]any{"taskId": "not-a-task"}); rerr == nil || rerr.Message != "task not found" {
			t.Errorf("%s of an unknown id: %+v", method, rerr)
		}
		if _, rerr := a.rpc(t.Context(), string(method), map[string]any{"taskId": 7}); rerr == nil || rerr.Code != mcp.INVALID_PARAMS {
			t.Errorf("%s with a malformed id: %+v, want invalid params", method, rerr)
		}
	}
	if tasks := a.list(); len(tasks) != 0 {
		t.Errorf("tasks/list of an agent with none: %+v", tasks)
	}
}

func TestTaskResultCollectedByANewSessionAfterDisconnect(t *testing.T) {
	s := newStack(t, withAgents)
	url := s.serveHTTP(t) + "/mcp"
	first := httpTaskClient(t, url, "agent-a")
	before := first.balance()
	task := first.start("transfer", transferArgs(20000))
	if err := first.c.Close(); err != nil { // ends the session (DELETE)
		t.Fatal(err)
	}
	if err := s.decide(t, task.TaskId, "approve"); err != nil {
		t.Fatal(err)
	}
	second := httpTaskClient(t, url, "agent-a")
	res := second.mustResult(task.TaskId)
	if res.IsError {
		t.Fatalf("result collected by a new session: %s", toolText(res.Content))
	}
	if got := second.balance(); got != before-2_000_000 {
		t.Fatalf("operating %d cents, want exactly one transfer from %d", got, before)
	}
	if n := s.count(t, vocab.KindCallExecuted, task.TaskId); n != 1 {
		t.Errorf("%d call.executed entries, want 1", n)
	}
}

// SSE cannot carry an answer mcp-go did not make: a task message there is
// refused, and the rest of the session goes on.
func TestSSERefusesTaskAugmentedCalls(t *testing.T) {
	s := newStack(t, withAgents)
	base := s.serveHTTP(t)
	hc := withToken(agentTokens["agent-a"])
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	var endpoint string
	for endpoint == "" && events.Scan() {
		if data, ok := strings.CutPrefix(events.Text(), "data: "); ok && strings.Contains(data, "sessionId=") {
			endpoint = data
		}
	}
	if !strings.HasPrefix(endpoint, "/message?") {
		t.Fatalf("SSE endpoint event: %q", endpoint)
	}
	post := func(body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+endpoint, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return resp.StatusCode, b.String()
	}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"transfer","arguments":{},"task":{}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tasks/list","params":{}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tasks\/get","params":{"taskId":"x"}}`,
	} {
		if code, msg := post(body); code != http.StatusBadRequest || !strings.Contains(msg, "not SSE") {
			t.Errorf("%s over SSE: %d %s, want 400 saying tasks are not served on SSE", body, code, msg)
		}
	}
	if code, msg := post(initBody); code != http.StatusAccepted {
		t.Errorf("initialize over SSE after refused task messages: %d %s", code, msg)
	}
	if es := s.entries(t, vocab.KindApprovalRequested); len(es) != 0 {
		t.Errorf("a refused task message raised a request: %+v", es)
	}
}
