package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdio is one agent's stdin and stdout to ServeStdio, as pipes.
type stdio struct {
	stdin  *io.PipeWriter // what the agent writes
	stdout io.ReadCloser  // what the agent reads: every byte is also kept in out
	out    *syncBuffer
	done   chan error // ServeStdio's return
}

// serveStdio runs ServeStdio until the agent closes its stdin.
func (s *stack) serveStdio(t *testing.T) *stdio {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	io := &stdio{stdin: inW, out: &syncBuffer{}, done: make(chan error, 1)}
	io.stdout = readCloser{Reader: teeReader(outR, io.out), Closer: outR}
	go func() {
		err := s.server.ServeStdio(context.Background(), inR, outW)
		outW.Close()
		io.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-io.done:
		case <-time.After(30 * time.Second):
			t.Error("ServeStdio did not return after stdin closed")
		}
	})
	return io
}

// frames checks that everything written to stdout is a JSON-RPC frame, one
// a line, and returns them.
func (io *stdio) frames(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(io.out.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var frame map[string]any
		if err := json.Unmarshal(sc.Bytes(), &frame); err != nil || frame["jsonrpc"] != "2.0" {
			t.Errorf("stdout line is not a JSON-RPC frame: %q", sc.Text())
			continue
		}
		out = append(out, frame)
	}
	return out
}

type readCloser struct {
	io.Reader
	io.Closer
}

func teeReader(r io.Reader, w io.Writer) io.Reader { return io.TeeReader(r, w) }

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// Under stdio, stdout carries MCP frames and nothing else, on both protocol
// versions, while a call waits for a human and reports its progress; the
// agent is the configured stdio agent.
func TestStdioWritesOnlyMCPFrames(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) {
			s := newStack(t, func(c *config.Config) { c.Server.StdioAgent = "desk-agent" })
			io := s.serveStdio(t)
			cs := connect(t, &sdk.IOTransport{Reader: io.stdout, Writer: io.stdin}, version)
			checkServes(t, cs)
			if res := servertest.CallTool(t, cs, "transfer", transferArgs(12.5)); res.IsError {
				t.Fatalf("small transfer: %s", servertest.ResultText(res))
			}
			results := make(chan *sdk.CallToolResult, 1)
			go func() {
				params := &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(20000)}
				params.SetProgressToken("wait-1")
				res, err := cs.CallTool(context.Background(), params)
				if err != nil {
					t.Errorf("waiting transfer: %v", err)
				}
				results <- res
			}()
			id := s.waitRequest(t)
			waitFor(t, "a progress notification", func() bool { return strings.Contains(string(io.out.Bytes()), `"notifications/progress"`) })
			if err := s.decide(t, id, "approve"); err != nil {
				t.Fatal(err)
			}
			if res := <-results; res == nil || res.IsError {
				t.Fatalf("approved transfer over stdio: %+v", res)
			}
			cs.Close()
			select {
			case err := <-io.done:
				if err != nil && err != context.Canceled {
					t.Errorf("ServeStdio: %v", err)
				}
				io.done <- err
			case <-time.After(30 * time.Second):
				t.Fatal("ServeStdio did not return after stdin closed")
			}

			methods := map[string]int{}
			for _, f := range io.frames(t) {
				if m, ok := f["method"].(string); ok {
					methods[m]++
				}
			}
			if methods["notifications/progress"] == 0 {
				t.Errorf("no progress notifications on stdout while the call waited: %v", methods)
			}
			for _, e := range s.entries(t, vocab.KindCallExecuted) {
				if e.Agent != "desk-agent" {
					t.Errorf("a stdio call recorded as agent %q, want the configured stdio agent", e.Agent)
				}
			}
		})
	}
}

// Calls waiting for a human hold stdio workers; routine calls must still
// run while more approvals wait than mcp-go's default pool of five.
func TestRoutineCallsRunWhileApprovalsWaitOverStdio(t *testing.T) {
	s := newStack(t, nil)
	io := s.serveStdio(t)
	cs := connect(t, &sdk.IOTransport{Reader: io.stdout, Writer: io.stdin}, protocolVersions[0])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const waiting = 8
	for range waiting {
		go cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(50000)})
	}
	waitFor(t, "approvals raised", func() bool { return len(s.entries(t, vocab.KindApprovalRequested)) == waiting })
	checkServes(t, cs)
}

func TestTaskOverStdio(t *testing.T) {
	s := newStack(t, nil)
	io := s.serveStdio(t)
	a := newTaskClient(t, transport.NewIO(io.stdout, io.stdin, readCloser{Reader: strings.NewReader(""), Closer: io.stdout}))
	before := a.balance()

	task := a.start("transfer", transferArgs(20000))
	r, err := s.approvals.Get(context.Background(), task.TaskId)
	if err != nil {
		t.Fatalf("the task id is not a request: %v", err)
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
	if err := s.decide(t, task.TaskId, "approve"); err != nil {
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

	cancelled := a.start("transfer", transferArgs(20000))
	if got, rerr := a.cancel(cancelled.TaskId); rerr != nil || got.Status != mcp.TaskStatusCancelled {
		t.Fatalf("tasks/cancel over stdio: %+v %v", got, rerr)
	}
	a.waitStatus(cancelled.TaskId, mcp.TaskStatusCancelled)
	if got := a.balance(); got != before-2_000_000 {
		t.Fatalf("a cancelled task moved money: %d", got)
	}
	listed := map[string]bool{}
	for _, lt := range a.list() {
		listed[lt.TaskId] = true
	}
	if !listed[task.TaskId] || !listed[cancelled.TaskId] {
		t.Errorf("tasks/list over stdio lacks the agent's tasks: %v", listed)
	}
	// Task answers and status notifications share stdout with mcp-go's
	// frames, whole lines each.
	var statuses int
	for _, f := range io.frames(t) {
		if f["method"] == string(mcp.MethodNotificationTasksStatus) {
			statuses++
		}
	}
	if statuses == 0 {
		t.Error("no notifications/tasks/status frames on stdout")
	}
}
