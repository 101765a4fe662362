package guard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/tools"
)

// Call ids, as a backend sees them in Call.ID: a countersigned call is
// named by its approval request, a routine one by the seq of its
// call.allowed entry. Either way an auditor finds the call from the id.
const (
	requestCallPrefix = "request:"
	entryCallPrefix   = "entry:"
)

func requestCallID(id string) string { return requestCallPrefix + id }
func entryCallID(seq int64) string   { return entryCallPrefix + strconv.FormatInt(seq, 10) }

// What a restart tells the approver and the agent.
const (
	noteInterrupted = "the server stopped while this ran; whether it took effect is unknown, and it is not run again"
	noteRecovered   = "recorded at start: the server stopped after the backend committed and before the record"
)

// Resume settles, before the server takes calls, what the previous process
// left unfinished (see the package comment for the rule per backend):
//
//   - block-mode requests still pending are cancelled (approval.Restart);
//   - requests whose run was claimed are settled now: recorded with their
//     real outcome where the backend can tell, otherwise interrupted;
//   - pending poll-mode requests, and approved ones nobody claimed, are
//     watched in the background and run once when approved;
//   - every effect a backend's journal holds without its audit record gets
//     one.
//
// An error means something could not be recorded; the server must not
// serve then.
func (g *Guard) Resume(ctx context.Context) error {
	if g.opts.Approvals != nil {
		cancelled, err := g.opts.Approvals.Restart(ctx)
		if err != nil {
			return err
		}
		if len(cancelled) > 0 {
			g.log.Info("cancelled block-mode requests whose callers died with the previous process",
				"count", len(cancelled), "reason", approval.ReasonRestarted)
		}
		unfinished, err := g.opts.Approvals.Unfinished(ctx)
		if err != nil {
			return err
		}
		for _, u := range unfinished {
			if u.Claimed {
				if err := g.settleClaimed(ctx, u); err != nil {
					return fmt.Errorf("guard: settle request %s: %w", u.ID, err)
				}
				continue
			}
			g.log.Info("resuming approval request", "auth_req_id", u.ID, "tool", u.Tool, "state", u.State, "wait", u.Wait)
			g.bg.Add(1)
			go func() {
				defer g.bg.Done()
				g.resume(u)
			}()
		}
	}
	return g.reconcileJournals(ctx)
}

// storedEntry is the audit entry of a stored request's call, as the guard
// made it when the call came in.
func storedEntry(u approval.Unfinished) audit.Entry {
	e := audit.Entry{Agent: u.Agent, Tool: u.Tool, Decision: u.Level, Rule: u.Rule, RequestID: u.ID}
	canonical{JSON: u.Args, SHA256: sha256.Sum256(u.Args)}.setOn(&e, u.RedactArgs)
	return e
}

// settleClaimed ends a request whose run was claimed by a process that
// died. A backend that keeps its effects under the call id (Spec.Recover)
// says whether the run took effect: its record is written then, or, if it
// never did, this is its one run. Any other backend may or may not have
// acted: the request is interrupted, and never run again.
func (g *Guard) settleClaimed(ctx context.Context, u approval.Unfinished) error {
	entry := storedEntry(u)
	spec, ok := g.opts.Catalog.Lookup(u.Tool)
	if !ok || spec.Recover == nil {
		return g.interrupt(ctx, u, entry)
	}
	var args map[string]any
	if err := json.Unmarshal(u.Args, &args); err != nil {
		return fmt.Errorf("stored arguments: %w", err)
	}
	call := &tools.Call{Args: args, Agent: u.Agent, ID: requestCallID(u.ID)}
	res, done, err := spec.Recover(ctx, call)
	if err != nil {
		return fmt.Errorf("ask %s whether the call took effect: %w", u.Tool, err)
	}
	if done {
		_, content, rec, ok := g.executed(spec, res, entry)
		rec.Reason = noteRecovered
		g.log.Info("recorded a run the previous process finished but did not record", "auth_req_id", u.ID, "tool", u.Tool)
		return g.finishErr(ctx, u.ID, content, rec, ok)
	}
	// It never took effect. Run it now, on the arguments as prepared
	// again, which must be the approved bytes.
	call, err = g.prepareStored(ctx, spec, u)
	if err != nil {
		return g.failClaimed(ctx, u, entry, err)
	}
	call.ID = requestCallID(u.ID)
	g.log.Info("running a claimed request that never took effect", "auth_req_id", u.ID, "tool", u.Tool)
	g.runs.RLock()
	defer g.runs.RUnlock()
	_, content, rec, ok := g.execute(ctx, spec, call, entry)
	return g.finishErr(ctx, u.ID, content, rec, ok)
}

func (g *Guard) interrupt(ctx context.Context, u approval.Unfinished, entry audit.Entry) error {
	entry.Kind, entry.Reason = audit.KindCallInterrupted, noteInterrupted
	result, _ := json.Marshal(map[string]string{"error": "interrupted: " + noteInterrupted})
	g.log.Warn("approved request was running when the previous process stopped; outcome unknown",
		"auth_req_id", u.ID, "tool", u.Tool)
	return g.opts.Approvals.Finish(ctx, u.ID, approval.Outcome{
		State: approval.StateInterrupted, Result: result, Note: noteInterrupted, Record: entry,
	})
}

// failClaimed ends a claimed request that cannot run, saying why.
func (g *Guard) failClaimed(ctx context.Context, u approval.Unfinished, entry audit.Entry, cause error) error {
	entry.Kind, entry.Reason = audit.KindCallFailed, "not run after restart: "+cause.Error()
	result, _ := json.Marshal(map[string]string{"error": entry.Reason})
	g.log.Error("approved request cannot run after restart", "auth_req_id", u.ID, "tool", u.Tool, "err", cause)
	return g.opts.Approvals.Finish(ctx, u.ID, approval.Outcome{State: approval.StateFailed, Result: result, Record: entry})
}

func (g *Guard) finishErr(ctx context.Context, id string, content json.RawMessage, rec audit.Entry, ok bool) error {
	state := approval.StateFailed
	if ok {
		state = approval.StateExecuted
	}
	return g.opts.Approvals.Finish(ctx, id, approval.Outcome{State: state, Result: content, Record: rec})
}

// resume sees a pending or approved, unclaimed request to its one run. It
// stops, leaving the request as it is, when the guard closes.
func (g *Guard) resume(u approval.Unfinished) {
	ctx, cancel := context.WithCancel(g.life)
	defer cancel()
	final, err := g.opts.Approvals.Watch(ctx, u.ID)
	if err != nil || final.State != approval.StateApproved {
		return
	}
	entry := storedEntry(u)
	spec, err := g.waitTool(ctx, u.Tool)
	if ctx.Err() != nil {
		return // shutting down: the next start resumes it
	}
	var call *tools.Call
	if err == nil {
		call, err = g.prepareStored(ctx, spec, u)
	}
	if err != nil {
		if cerr := g.opts.Approvals.BeginExecution(context.WithoutCancel(ctx), u.ID); cerr != nil {
			g.log.Error("cannot claim a request to fail it", "auth_req_id", u.ID, "err", cerr)
			return
		}
		if ferr := g.failClaimed(context.WithoutCancel(ctx), u, entry, err); ferr != nil {
			g.log.Error("cannot store approval outcome", "auth_req_id", u.ID, "err", ferr)
		}
		return
	}
	call.Agent = u.Agent
	g.runApproved(context.WithoutCancel(ctx), u.ID, spec, call, entry)
}

// waitTool finds a tool by name, waiting up to Options.ToolWait for it to
// appear: an upstream's tools join the catalog only once it is connected.
func (g *Guard) waitTool(ctx context.Context, name string) (*tools.Spec, error) {
	deadline := time.Now().Add(g.opts.ToolWait)
	for {
		if spec, ok := g.opts.Catalog.Lookup(name); ok {
			return spec, nil
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("tool %s is not available (an upstream that offers it did not connect within %s)", name, g.opts.ToolWait)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// prepareStored prepares a stored request's arguments again, as the
// original call did, and checks they still come out as the approved bytes:
// the tool runs on exactly what the humans signed, or not at all.
func (g *Guard) prepareStored(ctx context.Context, spec *tools.Spec, u approval.Unfinished) (*tools.Call, error) {
	var args map[string]any
	if err := json.Unmarshal(u.Args, &args); err != nil {
		return nil, fmt.Errorf("stored arguments: %w", err)
	}
	sch, err := g.schema(spec)
	if err == nil {
		err = sch.validate(args)
	}
	if err != nil {
		return nil, err
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	canon, err := canonicalize(call.Args)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon.JSON, u.Args) {
		return nil, errors.New("the tool now prepares the arguments differently from what was approved")
	}
	call.Agent = u.Agent
	return call, nil
}

// reconcileJournals gives every effect a backend committed without its
// audit record (the process died between the two) that record. A routine
// call's effect is named by its call.allowed entry, whose agent, tool and
// arguments the record repeats; a countersigned call's effect was settled
// with its request. Then each journal's recorded mark moves to its end.
func (g *Guard) reconcileJournals(ctx context.Context) error {
	for _, spec := range g.opts.Catalog.Specs() {
		j := spec.Journal
		if j == nil {
			continue
		}
		if err := g.reconcile(ctx, spec, j); err != nil {
			return fmt.Errorf("guard: reconcile %s with the audit log: %w", spec.Def.Name, err)
		}
	}
	return nil
}

func (g *Guard) reconcile(ctx context.Context, spec *tools.Spec, j tools.Journal) error {
	last, err := j.Last(ctx)
	if err != nil {
		return err
	}
	pos, err := j.Recorded(ctx)
	if err != nil {
		return err
	}
	// The routine calls' effects since the mark, by the seq of their
	// call.allowed entry.
	pending := map[int64]tools.Effect{}
	first := int64(-1)
	for pos < last {
		page, err := j.Effects(ctx, pos, 1000)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			pos = e.Pos
			seq, ok := strings.CutPrefix(e.CallID, entryCallPrefix)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(seq, 10, 64)
			if err != nil || n <= 0 {
				g.log.Warn("effect with a call id the guard did not make", "tool", spec.Def.Name, "call_id", e.CallID)
				continue
			}
			pending[n] = e
			if first < 0 || n < first {
				first = n
			}
		}
	}
	if len(pending) > 0 {
		if g.opts.History == nil {
			return errors.New("no audit log reader to reconcile with")
		}
		if err := g.recordMissing(ctx, spec, pending, first); err != nil {
			return err
		}
	}
	return j.SetRecorded(ctx, last)
}

// recordMissing reads the log from the earliest call.allowed among the
// effects, drops every effect whose call.executed is there, and records
// the rest.
func (g *Guard) recordMissing(ctx context.Context, spec *tools.Spec, pending map[int64]tools.Effect, first int64) error {
	allowed := map[int64]audit.Entry{}
	for seq := first - 1; ; {
		page, err := g.opts.History.Since(ctx, seq, 1000)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seq = e.Seq
			if _, ok := pending[e.Seq]; ok {
				allowed[e.Seq] = e
			}
			if e.Kind != audit.KindCallExecuted || e.Tool != spec.Def.Name || len(e.Result) == 0 {
				continue
			}
			var rec struct {
				CallID string `json:"call_id"`
			}
			if json.Unmarshal(e.Result, &rec) != nil {
				continue
			}
			if n, ok := strings.CutPrefix(rec.CallID, entryCallPrefix); ok {
				if n, err := strconv.ParseInt(n, 10, 64); err == nil {
					delete(pending, n)
				}
			}
		}
	}
	for seq, eff := range pending {
		a, ok := allowed[seq]
		entry := audit.Entry{Tool: spec.Def.Name, Agent: "unknown"}
		if ok && a.Kind == audit.KindCallAllowed && a.Tool == spec.Def.Name {
			entry = audit.Entry{Agent: a.Agent, Tool: a.Tool, Args: a.Args, ArgsRedact: a.ArgsRedact,
				ArgsSHA256: a.ArgsSHA256, Decision: a.Decision, Rule: a.Rule}
		} else {
			g.log.Error("an effect names a call.allowed entry the log does not hold", "tool", spec.Def.Name, "call_id", eff.CallID)
		}
		_, _, rec, _ := g.executed(spec, eff.Result, entry)
		rec.Reason = noteRecovered
		if ok {
			rec.Reason += fmt.Sprintf(" (allowed at seq %d)", seq)
		}
		if _, err := g.opts.Audit.Append(ctx, rec); err != nil {
			return err
		}
		g.log.Warn("recorded an effect the previous process committed without its record", "tool", spec.Def.Name, "call_id", eff.CallID)
	}
	return nil
}

// advanceMarks moves each journal's recorded mark to its end, but only at
// a moment when no journaled run is between its effect and its record:
// then every effect committed so far has its record. It never waits for
// that moment; a later try will do.
func (g *Guard) advanceMarks(ctx context.Context) {
	if g.unrecorded.Load() || !g.runs.TryLock() {
		return
	}
	defer g.runs.Unlock()
	for _, spec := range g.opts.Catalog.Specs() {
		j := spec.Journal
		if j == nil {
			continue
		}
		last, err := j.Last(ctx)
		if err == nil {
			err = j.SetRecorded(ctx, last)
		}
		if err != nil {
			g.log.Warn("cannot move the recorded mark", "tool", spec.Def.Name, "err", err)
		}
	}
}

// markLoop moves the recorded marks now and then, so that reconciling
// after a crash reads only the end of the log.
func (g *Guard) markLoop(every time.Duration) {
	defer g.bg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.life.Done():
			return
		case <-t.C:
			g.advanceMarks(g.life)
		}
	}
}
