package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// The routing test decides which messages the task code answers; a message
// it lets through goes to mcp-go, so it must catch every task message,
// however its JSON is spelled.
func TestIsTaskMessage(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":"a","method":"tasks/list"}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tasks\/get","params":{"taskId":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"\u0074asks/get","params":{"taskId":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","task":{}}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","\u0074ask":{"ttl":1}}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","task":null}}`, false},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"task","arguments":{"task":"x"}}}`, false},
		{`{"jsonrpc":"2.0","method":"tasks/get","params":{"taskId":"x"}}`, false}, // a notification: no answer
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, false},
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/`, false}, // malformed: mcp-go answers it
	} {
		if _, got := isTaskMessage([]byte(tc.raw)); got != tc.want {
			t.Errorf("isTaskMessage(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestRoutineTasksAreTheAgentsOwnAndKeptForAWhile(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rt := routineTasks{now: func() time.Time { return now }}
	ok := &mcp.CallToolResult{}
	failed := &mcp.CallToolResult{IsError: true}

	first := rt.add("a", ok)
	if first.Status != mcp.TaskStatusCompleted || rt.add("a", failed).Status != mcp.TaskStatusFailed {
		t.Errorf("a routine task is completed, or failed when its result is an error: %+v", first)
	}
	if _, found := rt.get("b", first.TaskId); found {
		t.Error("another agent got a's routine task")
	}
	if got := rt.list("b"); len(got) != 0 {
		t.Errorf("another agent lists a's routine tasks: %+v", got)
	}
	if got := rt.list("a"); len(got) != 2 || got[1].TaskId != first.TaskId {
		t.Errorf("a's routine tasks, newest first: %+v", got)
	}

	now = now.Add(routineTaskTTL + time.Second)
	if _, found := rt.get("a", first.TaskId); found {
		t.Error("a routine task outlived its TTL")
	}
	if got := rt.list("a"); len(got) != 0 {
		t.Errorf("routine tasks past their TTL are listed: %+v", got)
	}

	// At most routineTaskMax are kept: the oldest go first.
	var ids []string
	for i := range routineTaskMax + 5 {
		ids = append(ids, rt.add(fmt.Sprint("agent-", i%2), ok).TaskId)
	}
	if _, found := rt.get("agent-0", ids[0]); found {
		t.Error("the oldest routine task was kept beyond the limit")
	}
	last := len(ids) - 1
	if _, found := rt.get(fmt.Sprint("agent-", last%2), ids[last]); !found {
		t.Error("the newest routine task was dropped")
	}
	if n := len(rt.tasks); n > routineTaskMax {
		t.Errorf("%d routine tasks kept, want at most %d", n, routineTaskMax)
	}
}
