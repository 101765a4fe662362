package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// Running a call the policy allowed or a human approved: the tool runs
// once, its result is shaped for the agent, and its outcome is recorded
// before the agent hears of it.

// run executes the tool once and records what happened. It returns the
// seq of the record (0 when it could not be recorded) and whether the tool
// succeeded. A result whose record could not be made durable is withheld
// from the agent: nothing is acknowledged that the log could lose.
func (g *Guard) run(ctx context.Context, spec *tools.Spec, call *tools.Call, entry audit.Entry) (*mcp.CallToolResult, int64, bool) {
	out, _, rec, ok := g.execute(ctx, spec, call, entry)
	e, err := g.opts.Audit.Append(context.WithoutCancel(ctx), rec)
	if err != nil {
		g.log.Error("audit append failed", "kind", rec.Kind, "tool", rec.Tool, "err", err)
		if rec.ArgsSeq != 0 && rec.RequestID == "" {
			g.late.Keep(rec) // a routine call's outcome: recorded once the log takes it
		}
		if ok {
			return withheld(spec), 0, true
		}
		return out, 0, false
	}
	return out, e.Seq, ok
}

// withheld is what the agent gets for a run whose record is not durable.
func withheld(spec *tools.Spec) *mcp.CallToolResult {
	return toolError("%s ran, but the audit log cannot record it; its result is withheld", spec.Def.Name)
}

// execute runs the tool once. It returns what the agent gets, the result
// as JSON (for approval_status), and the entry that records the run
// (call.executed, call.failed or call.interrupted), which the caller
// appends. It reports false only when the tool surely did not act: an
// interrupted call may have, and keeps counting as run.
//
// An error is recorded for what it says about the action: the backend's
// own error answer is call.failed (it ran, or refused, and failed); a
// call that never reached its backend is call.failed saying "not sent";
// a call handed over whose answer never came (tools.UnknownOutcomeError:
// cancelled upstream after it was sent, timed out, connection lost) is
// call.interrupted, never call.failed.
func (g *Guard) execute(ctx context.Context, spec *tools.Spec, call *tools.Call, entry audit.Entry) (*mcp.CallToolResult, json.RawMessage, audit.Entry, bool) {
	res, err := safeRun(ctx, spec, call)
	if err != nil && tools.OutcomeUnknown(err) {
		entry.Kind, entry.Reason = vocab.KindCallInterrupted, err.Error()
		msg, _ := json.Marshal(map[string]string{"error": "interrupted: " + err.Error()})
		g.log.Warn("call sent, outcome unknown", "tool", spec.Def.Name, "agent", entry.Agent, "err", err)
		return toolError("%s was sent, but its outcome is unknown (%v): it may have taken effect, and it is not run again",
			spec.Def.Name, err), msg, entry, true
	}
	if err != nil {
		entry.Kind, entry.Reason = vocab.KindCallFailed, err.Error()
		msg, _ := json.Marshal(map[string]string{"error": err.Error()})
		return toolError("%s failed: %v", spec.Def.Name, err), msg, entry, false
	}
	return g.executed(spec, res, entry)
}

// executed is the agent's result, its JSON and the call.executed entry
// for a tool's result.
func (g *Guard) executed(spec *tools.Spec, res *tools.Result, entry audit.Entry) (*mcp.CallToolResult, json.RawMessage, audit.Entry, bool) {
	var out *mcp.CallToolResult
	var content []byte
	var err error
	if res.MCP != nil {
		out = res.MCP
		content, err = json.Marshal(res.MCP)
	} else {
		content, err = json.Marshal(res.Content)
		out = mcp.NewToolResultStructured(res.Content, string(content))
	}
	if err != nil {
		entry.Kind, entry.Reason = vocab.KindCallFailed, "cannot encode result: "+err.Error()
		return toolError("%s: cannot encode result: %v", spec.Def.Name, err), nil, entry, false
	}
	entry.Kind = vocab.KindCallExecuted
	record := res.Record
	if record == nil && res.MCP != nil {
		sum := sha256.Sum256(content)
		record = map[string]any{"result_sha256": hex.EncodeToString(sum[:]), "is_error": res.MCP.IsError}
	}
	if record != nil && res.MCP == nil && sameMap(record, res.Content) {
		entry.Result = content // a tool that records its whole result: its JSON is written once
	} else if rec, err := json.Marshal(record); err == nil && record != nil {
		entry.Result = rec
	}
	return out, content, entry, true
}

// sameMap reports whether a and b are one map (not two equal ones).
func sameMap(a, b any) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	return va.Kind() == reflect.Map && vb.Kind() == reflect.Map && va.Type() == vb.Type() && va.UnsafePointer() == vb.UnsafePointer()
}

func safeRun(ctx context.Context, spec *tools.Spec, call *tools.Call) (res *tools.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("tool panicked: %v", p)
		}
	}()
	res, err = spec.Run(ctx, call)
	if err == nil && res == nil {
		err = errors.New("tool returned no result")
	}
	return res, err
}
