package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
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
	checkRoutineTasks(t, &rt, &rt, &now)

	// At most routineTaskMax are kept: the oldest go first.
	ok := &mcp.CallToolResult{}
	var ids []string
	for i := range routineTaskMax + 5 {
		ids = append(ids, rt.add(context.Background(), fmt.Sprint("agent-", i%2), ok).TaskId)
	}
	if _, found, _ := rt.get(context.Background(), "agent-0", ids[0]); found {
		t.Error("the oldest routine task was kept beyond the limit")
	}
	last := len(ids) - 1
	if _, found, _ := rt.get(context.Background(), fmt.Sprint("agent-", last%2), ids[last]); !found {
		t.Error("the newest routine task was dropped")
	}
	if n := len(rt.tasks); n > routineTaskMax {
		t.Errorf("%d routine tasks kept, want at most %d", n, routineTaskMax)
	}
}

// Kept in the database, a routine task made on replica A is read on B,
// with the same TTL and the same agent's-own rule, and its result is
// the one A would have answered.
func TestRoutineTasksKeptAreReadOnAnotherReplica(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, dbA, dbB *store.DB) {
		now := time.Now().UTC()
		replica := func(db *store.DB) *routineTasks {
			kept, err := store.OpenRoutineTasks(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			return &routineTasks{kept: kept, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
		}
		a, b := replica(dbA), replica(dbB)
		res := &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent("paid")}}
		task := a.add(context.Background(), "a", res)
		got, found, err := b.get(context.Background(), "a", task.TaskId)
		if err != nil || !found {
			t.Fatalf("B does not find A's routine task: %v %v", found, err)
		}
		want, _ := json.Marshal(toTaskResult(task.TaskId, res))
		if raw, _ := json.Marshal(got.result); string(raw) != string(want) || got.task.TaskId != task.TaskId || *got.task.TTL != *task.TTL {
			t.Errorf("B's answer %s (task %+v), want %s", raw, got.task, want)
		}
		if len(a.tasks) != 0 {
			t.Errorf("a kept task is also held in A's memory")
		}
		now = now.Add(time.Second) // past the first's millisecond
		checkRoutineTasks(t, a, b, &now)
	})
}

// checkRoutineTasks adds tasks on a and reads them on b (the same, or
// another replica).
func checkRoutineTasks(t *testing.T, a, b *routineTasks, now *time.Time) {
	t.Helper()
	ctx := context.Background()
	ok := &mcp.CallToolResult{}
	failed := &mcp.CallToolResult{IsError: true}

	first := a.add(ctx, "c", ok)
	if first.Status != mcp.TaskStatusCompleted || a.add(ctx, "c", failed).Status != mcp.TaskStatusFailed {
		t.Errorf("a routine task is completed, or failed when its result is an error: %+v", first)
	}
	if _, found, err := b.get(ctx, "d", first.TaskId); found || err != nil {
		t.Errorf("another agent got c's routine task (%v)", err)
	}
	if got, err := b.list(ctx, "d"); len(got) != 0 || err != nil {
		t.Errorf("another agent lists c's routine tasks: %+v (%v)", got, err)
	}
	if got, err := b.list(ctx, "c"); len(got) != 2 || got[1].TaskId != first.TaskId || err != nil {
		t.Errorf("c's routine tasks, newest first: %+v (%v)", got, err)
	}

	*now = now.Add(routineTaskTTL + time.Second)
	if _, found, _ := b.get(ctx, "c", first.TaskId); found {
		t.Error("a routine task outlived its TTL")
	}
	if got, _ := b.list(ctx, "c"); len(got) != 0 {
		t.Errorf("routine tasks past their TTL are listed: %+v", got)
	}
}
