package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Tasks reads, awaits and cancels an agent's own task requests.
// *approval.Service satisfies it.
type Tasks interface {
	Own(ctx context.Context, id, agent, wait string) (*approval.Request, error)
	ListOwn(ctx context.Context, agent, wait, after string, limit int) ([]*approval.Request, error)
	Await(ctx context.Context, id string, done func(*approval.Request) bool) (*approval.Request, error)
	Cancel(ctx context.Context, id, reason string) error
}

// MCP tasks (task-augmented tool calls) are the third way a call waits for
// a human, beside block mode and poll mode. The task is the approval
// request: its id is the auth_req_id, its state is the request's, kept in
// the approval store, so a task outlives its client's connection and the
// server process. Its request is raised in wait mode approval.WaitTask,
// which is poll mode as far as the server is concerned: after a restart it
// stays pending and runs once when approved (Resume). A call that needs
// no countersignature is no request: it runs at once and its task
// completes with its result (package server keeps that one).

// ErrTaskRunning refuses to cancel a task whose request was approved: its
// one run has started, or is about to.
var ErrTaskRunning = errors.New("approved and running; it can no longer be cancelled")

// ErrTaskEnded refuses to cancel a task that has ended.
var ErrTaskEnded = errors.New("the task has ended")

// ReasonTaskCancelled is the recorded reason of a request whose task its
// agent cancelled.
const ReasonTaskCancelled = "cancelled by the agent (tasks/cancel)"

// HandleTask runs c as a task. A call that needs a countersignature raises
// its request in task mode and returns it at once (the result is then
// nothing to the agent); any other call runs, or is refused, as Handle
// does, and returns its result with a nil request.
func (g *Guard) HandleTask(ctx context.Context, c Call) (*Request, *mcp.CallToolResult) {
	var r *approval.Request
	c.task = func(req *approval.Request) { r = req }
	res := g.Handle(ctx, c)
	return viewOf(r), res
}

// MayCountersign says some call of spec's tool can need a human: the
// server offers it as a task.
func (g *Guard) MayCountersign(spec *tools.Spec) bool {
	return g.opts.Policy.MayCountersign(spec.Def.Name, spec.ReadOnly())
}

// Task returns agent's task id. Another agent's task, or any request that
// is not a task, is ErrNoTask, like an id that does not exist.
func (g *Guard) Task(ctx context.Context, id, agent string) (*Request, error) {
	r, err := g.ownTask(ctx, id, agent)
	return viewOf(r), err
}

func (g *Guard) ownTask(ctx context.Context, id, agent string) (*approval.Request, error) {
	if g.opts.Tasks == nil {
		return nil, ErrNoTask
	}
	return g.opts.Tasks.Own(ctx, id, agent, approval.WaitTask)
}

// Tasks lists agent's tasks, newest first, limit at a time after the task
// named by after.
func (g *Guard) Tasks(ctx context.Context, agent, after string, limit int) ([]*Request, error) {
	if g.opts.Tasks == nil {
		return nil, nil
	}
	rs, err := g.opts.Tasks.ListOwn(ctx, agent, approval.WaitTask, after, limit)
	return viewsOf(rs), err
}

// AwaitTask waits until done says agent's task id has got where its caller
// waits for; ctx ending returns ctx's error and leaves the task alone.
func (g *Guard) AwaitTask(ctx context.Context, id, agent string, done func(*Request) bool) (*Request, error) {
	r, err := g.awaitTask(ctx, id, agent, func(r *approval.Request) bool { return done(viewOf(r)) })
	return viewOf(r), err
}

func (g *Guard) awaitTask(ctx context.Context, id, agent string, done func(*approval.Request) bool) (*approval.Request, error) {
	if _, err := g.ownTask(ctx, id, agent); err != nil {
		return nil, err
	}
	return g.opts.Tasks.Await(ctx, id, done)
}

// CancelTask cancels agent's task id while its request is pending; the
// cancellation is recorded as approval.cancelled. A request decided
// already is not changed: an approved one is ErrTaskRunning, one that
// ended is ErrTaskEnded.
func (g *Guard) CancelTask(ctx context.Context, id, agent string) (*Request, error) {
	if _, err := g.ownTask(ctx, id, agent); err != nil {
		return nil, err
	}
	err := g.opts.Tasks.Cancel(context.WithoutCancel(ctx), id, ReasonTaskCancelled)
	if err != nil && !errors.Is(err, approval.ErrNotPending) {
		return nil, err
	}
	r, gerr := g.Task(ctx, id, agent)
	switch {
	case gerr != nil:
		return nil, gerr
	case err == nil:
		return r, nil
	case r.State == vocab.StateApproved:
		return r, ErrTaskRunning
	}
	return r, fmt.Errorf("%w: %s", ErrTaskEnded, r.State)
}

// TaskResult waits until agent's task id has settled and returns what the
// call returns in block mode: the tool's result (with its approval token)
// after its one run, or the denial, expiry, cancellation, failure or
// interruption (outcome unknown) as a tool error. The result can be asked
// for again while it is kept (approval.Options.ResultTTL); after that the
// answer says it ran and its result was erased.
func (g *Guard) TaskResult(ctx context.Context, id, agent string) (*mcp.CallToolResult, *Request, error) {
	res, r, err := g.taskResult(ctx, id, agent)
	return res, viewOf(r), err
}

func (g *Guard) taskResult(ctx context.Context, id, agent string) (*mcp.CallToolResult, *approval.Request, error) {
	r, err := g.awaitTask(ctx, id, agent, approval.Settled)
	if err != nil {
		return nil, nil, err
	}
	switch r.State {
	case vocab.StateExecuted, vocab.StateFailed:
	default:
		return toolError("%s", Outcome(r)), r, nil
	}
	tok, err := g.issueToken(ctx, id)
	if err != nil {
		return toolError("%s ran, but its approval token cannot be issued: %v", r.Tool, err), r, nil
	}
	if gone := resultGone(r); gone != "" {
		return withToken(toolError("%s %s once; %s", r.Tool, r.State, gone), tok), r, nil
	}
	if r.State == vocab.StateFailed {
		var failed struct{ Error string }
		_ = json.Unmarshal(r.Result, &failed)
		return withToken(toolError("%s failed: %s", r.Tool, failed.Error), tok), r, nil
	}
	return withToken(storedResult(r.Result), tok), r, nil
}

// storedResult is the agent's result again from what a run stored
// (Guard.executed): a tool that returns an MCP result stored that whole,
// with its content array; any other stored its structured content.
func storedResult(content json.RawMessage) *mcp.CallToolResult {
	var probe struct {
		Content []json.RawMessage `json:"content"`
	}
	if json.Unmarshal(content, &probe) == nil && probe.Content != nil {
		if res, err := mcp.ParseCallToolResult(&content); err == nil {
			return res
		}
	}
	var v any
	if err := json.Unmarshal(content, &v); err != nil {
		return toolError("the stored result cannot be read: %v", err)
	}
	return mcp.NewToolResultStructured(v, string(content))
}
