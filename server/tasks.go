package server

// MCP tasks: a client that sends a task-augmented tools/call gets a task at
// once and collects the result with tasks/get, tasks/result, tasks/cancel
// and tasks/list, hearing notifications/tasks/status on the way.
//
// mcp-go implements these methods itself, but keeps tasks in memory, scopes
// them to an MCP session (not to the authenticated agent), broadcasts their
// status to every connected client, and offers no hook to answer the
// methods another way. A countersigned call's task must outlive the session
// and the process, and belong to its agent. So this file answers the task
// methods, and task-augmented tools/call, before mcp-go sees them: the
// stdio reader and the Streamable HTTP handler hand each incoming message
// to answerTask first. A countersigned call's task is its approval request
// (the task id is the auth_req_id), read from the approval store through
// the guard; a routine call's task completes at once and its result is
// kept for a while: here, in memory, or where every replica reads it
// (Options.RoutineTasks). SSE cannot carry a response that
// mcp-go did not produce, so tasks are refused there.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
)

// Routine tasks are kept this long, and at most this many, for their
// client to read; the call itself has long ended.
const (
	routineTaskTTL = time.Hour
	routineTaskMax = 1024
	taskPageSize   = 50
)

// taskPollMillis is the poll interval a task suggests. A human takes
// seconds at least; notifications tell sooner.
const taskPollMillis int64 = 2000

// incoming is the part of a JSON-RPC message that routes it.
type incoming struct {
	ID     any             `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// isTaskMessage reports whether raw is a request this file answers.
func isTaskMessage(raw []byte) (incoming, bool) {
	var m incoming
	// Every message passes here: skip the parse for those that cannot
	// be one. JSON may escape a letter of a name, so the test is loose on
	// what it lets through, never on what it stops: a task message
	// names "tasks/..." or has a "task" member, and either has the
	// letters t-a-s-k unescaped or holds a backslash.
	if !bytes.Contains(raw, []byte("task")) && !bytes.Contains(raw, []byte(`\`)) {
		return m, false
	}
	if json.Unmarshal(raw, &m) != nil || m.ID == nil {
		return m, false
	}
	switch mcp.MCPMethod(m.Method) {
	case mcp.MethodTasksGet, mcp.MethodTasksList, mcp.MethodTasksResult, mcp.MethodTasksCancel:
		return m, true
	case mcp.MethodToolsCall:
		var p struct {
			Task json.RawMessage `json:"task"`
		}
		json.Unmarshal(m.Params, &p)
		return m, len(p.Task) > 0 && !bytes.Equal(p.Task, []byte("null"))
	}
	return m, false
}

// answerTask answers one task message of agent.
func (s *Server) answerTask(ctx context.Context, agent string, raw []byte, m incoming) mcp.JSONRPCMessage {
	ctx = WithAgent(ctx, agent)
	id := mcp.NewRequestId(m.ID)
	var p struct {
		TaskID string     `json:"taskId"`
		Cursor mcp.Cursor `json:"cursor"`
	}
	if len(m.Params) > 0 {
		if err := json.Unmarshal(m.Params, &p); err != nil {
			return rpcError(id, mcp.INVALID_PARAMS, "invalid params: "+err.Error())
		}
	}
	var (
		result any
		err    error
	)
	switch mcp.MCPMethod(m.Method) {
	case mcp.MethodToolsCall:
		result, err = s.startTask(ctx, agent, raw)
	case mcp.MethodTasksGet:
		result, err = s.getTask(ctx, agent, p.TaskID)
	case mcp.MethodTasksResult:
		result, err = s.taskResult(ctx, agent, p.TaskID)
	case mcp.MethodTasksCancel:
		result, err = s.cancelTask(ctx, agent, p.TaskID)
	case mcp.MethodTasksList:
		result, err = s.listTasks(ctx, agent, string(p.Cursor))
	}
	var re *rpcErr
	switch {
	case errors.As(err, &re):
		return rpcError(id, re.code, re.msg)
	case err != nil:
		s.log.Error("task method failed", "method", m.Method, "agent", agent, "err", err)
		return rpcError(id, mcp.INTERNAL_ERROR, "internal error")
	}
	return mcp.NewJSONRPCResultResponse(id, result)
}

type rpcErr struct {
	code int
	msg  string
}

func (e *rpcErr) Error() string { return e.msg }

// errNoTask is what an unknown task, and another agent's, both get.
var errNoTask = &rpcErr{mcp.INVALID_PARAMS, "task not found"}

func rpcError(id mcp.RequestId, code int, msg string) mcp.JSONRPCError {
	return mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Error: mcp.NewJSONRPCErrorDetails(code, msg, nil)}
}

// startTask runs a task-augmented tools/call: a call that needs a human
// becomes a task on its approval request; any other call runs now and its
// task is already done.
func (s *Server) startTask(ctx context.Context, agent string, raw []byte) (any, error) {
	var req mcp.CallToolRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, &rpcErr{mcp.INVALID_PARAMS, "invalid params: " + err.Error()}
	}
	name := req.Params.Name
	s.syncMu.Lock()
	_, offered := s.offered[name]
	taskable := s.taskable[name]
	s.syncMu.Unlock()
	if !offered {
		s.opts.Guard.Reject(ctx, agent, name)
		return nil, &rpcErr{mcp.INVALID_PARAMS, fmt.Sprintf("tool '%s' not found", boundTool(name))}
	}
	if !taskable {
		return nil, &rpcErr{mcp.METHOD_NOT_FOUND, fmt.Sprintf("tool '%s' does not support task augmentation", name)}
	}
	r, res := s.opts.Guard.HandleTask(ctx, guard.Call{
		Tool: name, Agent: agent, Args: req.Params.Arguments, Raw: req.Params.RawArguments,
	})
	if r != nil {
		s.watchTask(r.ID, agent)
		task := s.taskOf(ctx, r)
		return mcp.CreateTaskResult{Task: task, Result: mcp.Result{Meta: mcp.WithModelImmediateResponse(
			"Waiting for a human to approve this call with a security key: " + task.StatusMessage)}}, nil
	}
	task := s.routine.add(ctx, agent, res)
	return mcp.CreateTaskResult{Task: task}, nil
}

func boundTool(name string) string {
	if len(name) > 128 {
		return name[:128] + "…"
	}
	return name
}

// ownTask returns agent's task id from the approval store.
func (s *Server) ownTask(ctx context.Context, agent, id string) (*guard.Request, error) {
	r, err := s.opts.Guard.Task(ctx, id, agent)
	if errors.Is(err, guard.ErrNoTask) {
		return nil, errNoTask
	}
	return r, err
}

func (s *Server) getTask(ctx context.Context, agent, id string) (any, error) {
	if t, ok, err := s.routine.get(ctx, agent, id); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return mcp.NewGetTaskResult(t.task), nil
	}
	r, err := s.ownTask(ctx, agent, id)
	if err != nil {
		return nil, err
	}
	s.watchTask(id, agent) // a task resumed after a restart is watched once asked about
	return mcp.NewGetTaskResult(s.taskOf(ctx, r)), nil
}

// taskResult waits until the task has settled, as tasks/result does, and
// returns the call's result.
func (s *Server) taskResult(ctx context.Context, agent, id string) (any, error) {
	if t, ok, err := s.routine.get(ctx, agent, id); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return t.result, nil
	}
	if _, err := s.ownTask(ctx, agent, id); err != nil {
		return nil, err
	}
	s.watchTask(id, agent)
	res, _, err := s.opts.Guard.TaskResult(ctx, id, agent)
	switch {
	case errors.Is(err, guard.ErrNoTask):
		return nil, errNoTask
	case ctx.Err() != nil:
		return nil, &rpcErr{mcp.REQUEST_INTERRUPTED, "request interrupted before the task settled"}
	case err != nil:
		return nil, err
	}
	return toTaskResult(id, res), nil
}

func toTaskResult(id string, res *mcp.CallToolResult) *mcp.TaskResultResult {
	out := &mcp.TaskResultResult{
		Result:  mcp.Result{Meta: mcp.WithRelatedTask(id)},
		Content: res.Content, StructuredContent: res.StructuredContent, IsError: res.IsError,
	}
	if res.Meta != nil {
		for k, v := range res.Meta.AdditionalFields {
			if k != mcp.RelatedTaskMetaKey {
				out.Meta.AdditionalFields[k] = v
			}
		}
	}
	return out
}

func (s *Server) cancelTask(ctx context.Context, agent, id string) (any, error) {
	if t, ok, err := s.routine.get(ctx, agent, id); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return nil, &rpcErr{mcp.INVALID_PARAMS, fmt.Sprintf("cannot cancel task in terminal status: %s", t.task.Status)}
	}
	r, err := s.opts.Guard.CancelTask(ctx, id, agent)
	switch {
	case errors.Is(err, guard.ErrNoTask):
		return nil, errNoTask
	case errors.Is(err, guard.ErrTaskRunning), errors.Is(err, guard.ErrTaskEnded):
		return nil, &rpcErr{mcp.INVALID_PARAMS, "cannot cancel task: " + err.Error()}
	case err != nil:
		return nil, err
	}
	return mcp.NewCancelTaskResult(s.taskOf(ctx, r)), nil
}

// listTasks lists agent's own tasks: routine ones still kept first, then
// countersigned ones, newest first, a page at a time.
func (s *Server) listTasks(ctx context.Context, agent, cursor string) (any, error) {
	var out []mcp.Task
	if cursor == "" {
		var err error
		if out, err = s.routine.list(ctx, agent); err != nil {
			return nil, err
		}
	}
	rs, err := s.opts.Guard.Tasks(ctx, agent, cursor, taskPageSize)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		out = append(out, s.taskOf(ctx, r))
	}
	res := mcp.NewListTasksResult(out)
	if res.Tasks == nil {
		res.Tasks = []mcp.Task{}
	}
	if len(rs) == taskPageSize {
		res.NextCursor = mcp.Cursor(rs[len(rs)-1].ID)
	}
	return res, nil
}

// taskOf is the MCP task a request is.
func (s *Server) taskOf(ctx context.Context, r *guard.Request) mcp.Task {
	updated := r.CreatedAt
	if !r.DecidedAt.IsZero() {
		updated = r.DecidedAt
	}
	poll := taskPollMillis
	t := mcp.Task{
		TaskId: r.ID, CreatedAt: r.CreatedAt.UTC().Format(time.RFC3339),
		LastUpdatedAt: updated.UTC().Format(time.RFC3339), PollInterval: &poll,
	}
	switch r.State {
	case vocab.StatePending:
		t.Status = mcp.TaskStatusWorking
		t.StatusMessage = fmt.Sprintf("waiting for approval by %s at %s, code %s, expires at %s",
			waitingFor(r, s.holders(ctx)), r.URL, r.Code, r.ExpiresAt.UTC().Format(time.RFC3339))
	case vocab.StateApproved:
		t.Status = mcp.TaskStatusWorking
		t.StatusMessage = "approved; about to run"
		if r.Running {
			t.StatusMessage = "approved; running"
		}
	case vocab.StateExecuted:
		t.Status, t.StatusMessage = mcp.TaskStatusCompleted, "approved and ran once; tasks/result has its result"
	case vocab.StateFailed:
		t.Status, t.StatusMessage = mcp.TaskStatusFailed, "approved, but the tool failed; tasks/result says why"
	case vocab.StateCancelled:
		t.Status, t.StatusMessage = mcp.TaskStatusCancelled, r.Outcome
	default: // denied, expired, interrupted
		t.Status, t.StatusMessage = mcp.TaskStatusFailed, r.Outcome
	}
	return t
}

// watchTask sends notifications/tasks/status to agent's connections each
// time task id changes, until it settles. One watcher per task.
func (s *Server) watchTask(id, agent string) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watching[id] || s.life.Err() != nil {
		return
	}
	s.watching[id] = true
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		defer func() {
			s.watchMu.Lock()
			delete(s.watching, id)
			s.watchMu.Unlock()
		}()
		last := ""
		for {
			r, err := s.opts.Guard.AwaitTask(s.life, id, agent, func(r *guard.Request) bool {
				return stage(r) != last
			})
			if err != nil {
				return
			}
			last = stage(r)
			s.tellTask(agent, s.taskOf(s.life, r))
			if guard.Settled(r) {
				return
			}
		}
	}()
}

// stage is what a notification reports: a change of state, or the run
// starting.
func stage(r *guard.Request) string { return fmt.Sprint(r.State, r.Running) }

// tellTask sends a task's status to every connection of its agent: its
// Streamable HTTP sessions and, when it is the stdio agent, stdout.
// Another agent hears nothing of it.
func (s *Server) tellTask(agent string, t mcp.Task) {
	raw, _ := json.Marshal(t)
	var params map[string]any
	json.Unmarshal(raw, &params)
	for _, id := range s.sessions.of(agent) {
		if err := s.mcp.SendNotificationToSpecificClient(id, mcp.MethodNotificationTasksStatus, params); err != nil {
			s.log.Debug("task status not delivered", "session", id, "err", err)
		}
	}
	s.stdioMu.Lock()
	out, stdioAgent := s.stdioOut, s.stdioAgent
	s.stdioMu.Unlock()
	if out != nil && stdioAgent == agent {
		// The same notification as on HTTP, framed as JSON-RPC 2.0: a
		// frame without "jsonrpc" is not a message to a strict client.
		frame, _ := json.Marshal(mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{
			Method: mcp.MethodNotificationTasksStatus, Params: mcp.NotificationParams{AdditionalFields: params}}})
		if _, err := out.Write(append(frame, '\n')); err != nil {
			s.log.Debug("task status not delivered on stdio", "err", err)
		}
	}
}

// routineTasks keeps the tasks of routine calls, which completed when they
// were created: their result is only here, and only for a while. With
// kept (Options.RoutineTasks) they are kept in the database, where every
// replica finds them; the memory holds only those the database refused.
type routineTasks struct {
	kept RoutineTasks
	log  *slog.Logger

	mu    sync.Mutex
	tasks map[string]*routineTask
	order []string // oldest first
	now   func() time.Time
}

// RoutineTasks keep routine calls' tasks where every replica reads them;
// *store.RoutineTasks satisfies it.
type RoutineTasks interface {
	KeepRoutineTask(ctx context.Context, t store.RoutineTask, forgetBefore time.Time) error
	RoutineTask(ctx context.Context, agent, id string, since time.Time) (store.RoutineTask, bool, error)
	RoutineTasksOf(ctx context.Context, agent string, since time.Time, limit int) ([]store.RoutineTask, error)
}

type routineTask struct {
	agent  string
	task   mcp.Task
	result any // the answer to tasks/result: *mcp.TaskResultResult, or its JSON when kept
	at     time.Time
}

func (rt *routineTasks) add(ctx context.Context, agent string, res *mcp.CallToolResult) mcp.Task {
	now := rt.now()
	t := mcp.NewTask(uuid.NewString(), mcp.WithTaskCreatedAt(now.UTC().Format(time.RFC3339)))
	ttl := routineTaskTTL.Milliseconds()
	t.TTL = &ttl
	t.Status, t.StatusMessage = mcp.TaskStatusCompleted, "ran at once; no approval needed"
	if res.IsError {
		t.Status, t.StatusMessage = mcp.TaskStatusFailed, "refused or failed; tasks/result says why"
	}
	result := toTaskResult(t.TaskId, res)
	if rt.kept != nil {
		err := rt.keep(ctx, agent, t, result, now)
		if err == nil {
			return t
		}
		// The call has run: its result must not be lost. This replica
		// still answers for it.
		rt.log.Error("cannot keep a routine task where every replica reads it; only this one knows it", "task", t.TaskId, "err", err)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.tasks == nil {
		rt.tasks = map[string]*routineTask{}
	}
	for len(rt.order) > 0 && (len(rt.order) >= routineTaskMax || now.Sub(rt.tasks[rt.order[0]].at) > routineTaskTTL) {
		delete(rt.tasks, rt.order[0])
		rt.order = rt.order[1:]
	}
	rt.tasks[t.TaskId] = &routineTask{agent: agent, task: t, result: result, at: now}
	rt.order = append(rt.order, t.TaskId)
	return t
}

func (rt *routineTasks) keep(ctx context.Context, agent string, t mcp.Task, result *mcp.TaskResultResult, now time.Time) error {
	task, err := json.Marshal(t)
	if err != nil {
		return err
	}
	res, err := json.Marshal(result)
	if err != nil {
		return err
	}
	return rt.kept.KeepRoutineTask(context.WithoutCancel(ctx), store.RoutineTask{ID: t.TaskId, Agent: agent, At: now, Task: task, Result: res},
		now.Add(-routineTaskTTL))
}

func (rt *routineTasks) get(ctx context.Context, agent, id string) (*routineTask, bool, error) {
	rt.mu.Lock()
	t, ok := rt.tasks[id]
	rt.mu.Unlock()
	if ok && t.agent == agent && rt.now().Sub(t.at) <= routineTaskTTL {
		return t, true, nil
	}
	if rt.kept == nil {
		return nil, false, nil
	}
	k, ok, err := rt.kept.RoutineTask(ctx, agent, id, rt.now().Add(-routineTaskTTL))
	if err != nil || !ok {
		return nil, false, err
	}
	return fromKept(k)
}

func fromKept(k store.RoutineTask) (*routineTask, bool, error) {
	t := &routineTask{agent: k.Agent, result: json.RawMessage(k.Result), at: k.At}
	if err := json.Unmarshal(k.Task, &t.task); err != nil {
		return nil, false, fmt.Errorf("routine task %s: %w", k.ID, err)
	}
	return t, true, nil
}

func (rt *routineTasks) list(ctx context.Context, agent string) ([]mcp.Task, error) {
	var out []mcp.Task
	if rt.kept != nil {
		kept, err := rt.kept.RoutineTasksOf(ctx, agent, rt.now().Add(-routineTaskTTL), routineTaskMax)
		if err != nil {
			return nil, err
		}
		for _, k := range kept {
			t, _, err := fromKept(k)
			if err != nil {
				return nil, err
			}
			out = append(out, t.task)
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for i := len(rt.order) - 1; i >= 0; i-- {
		if t := rt.tasks[rt.order[i]]; t.agent == agent && rt.now().Sub(t.at) <= routineTaskTTL {
			out = append(out, t.task)
		}
	}
	return out, nil
}

// answerTasksHTTP answers task messages on Streamable HTTP itself, as
// plain JSON responses; everything else goes on to the transport.
func (s *Server) answerTasksHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body) // bounded by limitBody
		r.Body.Close()
		if err != nil {
			http.Error(w, "cannot read request body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		m, ok := isTaskMessage(body)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		resp := s.answerTask(r.Context(), AgentFrom(r.Context()), body, m)
		w.Header().Set("Content-Type", "application/json")
		if id := r.Header.Get("Mcp-Session-Id"); id != "" {
			w.Header().Set("Mcp-Session-Id", id)
		}
		json.NewEncoder(w).Encode(resp)
	})
}

// refuseTasksSSE refuses task messages on SSE, whose responses only
// mcp-go can send; mcp-go's own in-memory tasks would not outlive the
// connection, nor belong to the agent.
func refuseTasksSSE(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				http.Error(w, "cannot read request body", http.StatusBadRequest)
				return
			}
			if _, ok := isTaskMessage(body); ok {
				http.Error(w, "MCP tasks are served over Streamable HTTP (/mcp) and stdio, not SSE", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, r)
	})
}

// stdioTasks sits between stdin and mcp-go's stdio server: task messages
// are answered here (each on its own goroutine: tasks/result may wait a
// long time), the rest go on through the pipe. It returns the reader
// mcp-go reads; stop waits for the answers under way.
func (s *Server) stdioTasks(ctx context.Context, agent string, in io.Reader, out io.Writer) (io.Reader, func()) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	var answering sync.WaitGroup
	go func() {
		defer cancel() // stdin closed: its waiting tasks/result calls end
		br := bufio.NewReader(in)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				if m, ok := isTaskMessage(line); ok {
					answering.Add(1)
					go func() {
						defer answering.Done()
						frame, _ := json.Marshal(s.answerTask(ctx, agent, line, m))
						out.Write(append(frame, '\n'))
					}()
				} else if _, werr := pw.Write(line); werr != nil {
					return
				}
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr, func() { cancel(); answering.Wait() }
}

// lockedWriter makes each Write whole on a writer two goroutines share:
// mcp-go writes a frame in one Write, and so do the task answers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
