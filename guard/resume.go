package guard

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// Recovery is what a start finds the previous process left: block-mode
// requests whose callers died (cancelled) and requests not yet run.
// *approval.Service satisfies it.
type Recovery interface {
	Restart(ctx context.Context) ([]string, error)
	Unfinished(ctx context.Context) ([]approval.Unfinished, error)
}

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
	noteNeverRan    = "recorded at start: the server stopped before this took effect; it did not run, and is not run again"
)

// Resume settles, before the server takes calls, what the previous process
// left unfinished (see the package comment for the rule per backend):
//
//   - block-mode requests still pending are cancelled (approval.Restart);
//   - requests whose run was claimed are settled now: recorded with their
//     real outcome where the backend can tell, otherwise interrupted;
//   - pending poll-mode requests, and approved ones nobody claimed, are
//     watched in the background and run once when approved;
//   - every routine call the log shows allowed but without an outcome gets
//     one (reconcileRoutine).
//
// An error means something could not be recorded; the server must not
// serve then.
func (g *Guard) Resume(ctx context.Context) error {
	if g.opts.Recovery != nil {
		cancelled, err := g.opts.Recovery.Restart(ctx)
		if err != nil {
			return err
		}
		if len(cancelled) > 0 {
			g.log.Info("cancelled block-mode requests whose callers died with the previous process",
				"count", len(cancelled), "reason", approval.ReasonRestarted)
		}
		g.releaseCancelled(ctx, cancelled)
		unfinished, err := g.opts.Recovery.Unfinished(ctx)
		if err != nil {
			return err
		}
		if err := g.settleUnfinished(ctx, unfinished); err != nil {
			return err
		}
	}
	return g.reconcileRoutine(ctx)
}

// settleUnfinished settles requests a gone process left (Resume, Reap):
// claimed runs now, the others parked to run once approved, each with
// the usage share the gone process counted for it (reapusage.go).
func (g *Guard) settleUnfinished(ctx context.Context, unfinished []approval.Unfinished) error {
	sh := g.shares()
	for _, u := range unfinished {
		if u.Wait == approval.WaitBackchannel {
			// No tool runs for it; its client redeems the approval at
			// the token endpoint. A claim the crash cut short never
			// handed out a token (the token's record commits with the
			// request's end). Its actions' shares are held here until
			// it ends, given back if without a token.
			counted := sh.ofActions(ctx, u)
			if u.Claimed {
				err := g.failClaimed(ctx, u, storedEntry(u), errors.New("the server stopped before the approval token was issued"))
				if err != nil {
					return fmt.Errorf("guard: settle request %s: %w", u.ID, err)
				}
			}
			g.watchActions(u.ID, counted)
			continue
		}
		if u.Claimed {
			if err := g.settleClaimed(ctx, u); err != nil {
				return fmt.Errorf("guard: settle request %s: %w", u.ID, err)
			}
			g.releaseUnrun(ctx, u.ID, sh.ofRequest(ctx, u))
			continue
		}
		if g.isParked(u.ID) {
			continue // resumed at an earlier reap
		}
		g.log.Info("resuming approval request", "auth_req_id", u.ID, "tool", u.Tool, "state", u.State, "wait", u.Wait)
		g.park(u.ID, sh.ofRequest(ctx, u))
	}
	return nil
}

// storedEntry is the audit entry of a stored request's call, as the guard
// made it when the call came in.
func storedEntry(u approval.Unfinished) audit.Entry {
	e := audit.Entry{Agent: u.Agent, Tool: u.Tool, Decision: string(u.Level), Rule: u.Rule, PolicySHA256: u.PolicySHA256, RequestID: u.ID}
	// The stored arguments are the request's digest.Args bytes, canonical
	// as they were made: hashed, not canonicalised again.
	sum := sha256.Sum256(u.Args)
	e.ArgsSHA256, e.ArgsRedact = hex.EncodeToString(sum[:]), u.RedactArgs
	if !u.RedactArgs {
		e.Args = u.Args
	}
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
	_, content, rec, ok := g.execute(ctx, spec, call, entry)
	return g.finishErr(ctx, u.ID, content, rec, ok)
}

func (g *Guard) interrupt(ctx context.Context, u approval.Unfinished, entry audit.Entry) error {
	entry.Kind, entry.Reason = vocab.KindCallInterrupted, noteInterrupted
	result, _ := json.Marshal(map[string]string{"error": "interrupted: " + noteInterrupted})
	g.log.Warn("approved request was running when the previous process stopped; outcome unknown",
		"auth_req_id", u.ID, "tool", u.Tool)
	return g.opts.Runs.Finish(ctx, u.ID, approval.Outcome{
		State: vocab.StateInterrupted, Result: result, Note: noteInterrupted, Record: entry,
	})
}

// failClaimed ends a claimed request that cannot run, saying why.
func (g *Guard) failClaimed(ctx context.Context, u approval.Unfinished, entry audit.Entry, cause error) error {
	entry.Kind, entry.Reason = vocab.KindCallFailed, "not run after restart: "+cause.Error()
	result, _ := json.Marshal(map[string]string{"error": entry.Reason})
	g.log.Error("approved request cannot run after restart", "auth_req_id", u.ID, "tool", u.Tool, "err", cause)
	return g.opts.Runs.Finish(ctx, u.ID, approval.Outcome{State: vocab.StateFailed, Result: result, Record: entry})
}

// finishErr stores a run's outcome, in the state its record names.
func (g *Guard) finishErr(ctx context.Context, id string, content json.RawMessage, rec audit.Entry, ok bool) error {
	o := approval.Outcome{State: vocab.StateFailed, Result: content, Record: rec}
	switch {
	case rec.Kind == vocab.KindCallInterrupted:
		o.State, o.Note = vocab.StateInterrupted, rec.Reason
	case ok:
		o.State = vocab.StateExecuted
	}
	return g.opts.Runs.Finish(ctx, id, o)
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
		err = sch.Validate(args)
	}
	if err != nil {
		return nil, err
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	canon, err := digest.NewArgs(call.Args, 0)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon.JSON(), u.Args) {
		return nil, errors.New("the tool now prepares the arguments differently from what was approved")
	}
	call.Agent = u.Agent
	// What the approvers signed, not what is prepared now: a tool that
	// checks at run time what was approved (an upstream tool's pinned
	// definition) sees the approved details.
	call.Details = u.AuthorizationDetails
	return call, nil
}

// markRoutine names the mark up to which every routine call.allowed entry
// in the log has its outcome (store.Marks).
const markRoutine = "guard.routine_outcomes"

// reconcileRoutine gives each routine call that a crash left without an
// outcome its outcome. It reads the log after the mark, pairs each
// call.executed, call.failed or call.interrupted of a routine call with
// the oldest open call.allowed of the same agent, tool and arguments
// (calls that agree on all three cannot be told apart, and need not be),
// and settles the calls left open:
//
//   - a backend that can tell (Spec.Recover): call.executed with the real
//     result if it took effect, call.failed if it did not (it is not run:
//     its caller is gone, and a routine call is the caller's to retry);
//   - any other tool: call.interrupted, outcome unknown (a read-only one
//     too: whether the caller got what it read is unknown).
//
// So every call.allowed has exactly one outcome entry.
//
// Then the mark moves to the end of the log. On the first start with a
// database that has no mark, the history before it is left alone: calls
// from before call ids cannot be settled truthfully.
func (g *Guard) reconcileRoutine(ctx context.Context) error {
	if g.opts.History == nil || g.opts.Marks == nil {
		return nil
	}
	from, ok, err := g.opts.Marks.Mark(ctx, markRoutine)
	if err != nil {
		return err
	}
	if ok && g.livePeers(ctx) {
		// Whose call an entry is the log does not say yet: an open one
		// may be a live replica's, still running, and must not get a
		// second outcome. The reaper settles what dead replicas left,
		// by owner (reapRoutine).
		g.log.Warn("routine calls the log shows open are left as they are: another replica lives, and they may be its calls in flight")
	} else if ok {
		if err := g.settleOpenCalls(ctx, from); err != nil {
			return err
		}
	}
	last, err := g.opts.History.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := g.opts.Marks.SetMark(ctx, markRoutine, last); err != nil {
		return err
	}
	if g.opts.Owner != "" {
		// The reaper settles this replica's calls from here should it die.
		if err := g.opts.Marks.SetMark(ctx, RoutineMark(g.opts.Owner), last); err != nil {
			return err
		}
	}
	g.lastMark.Store(last)
	return nil
}

func (g *Guard) settleOpenCalls(ctx context.Context, from int64) error {
	_, err := g.settleOpen(ctx, from, nil)
	return err
}

// settleOpen settles the routine calls allowed after from whose outcome
// the log lacks, and returns the seq of the last entry it read. With
// owned set, only the calls whose call.allowed is in owned: an outcome
// then closes its call by args_seq (format 3), or, without one, when it
// is in owned too.
func (g *Guard) settleOpen(ctx context.Context, from int64, owned map[int64]bool) (int64, error) {
	type key struct{ agent, tool, args string }
	open := map[key][]audit.Entry{}
	bySeq := map[int64]bool{} // open calls, by their call.allowed's seq (owned only)
	seq := from
	for {
		page, err := g.opts.History.Since(ctx, seq, 1000)
		if err != nil {
			return seq, err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seq = e.Seq
			if e.RequestID != "" {
				continue
			}
			k := key{e.Agent, e.Tool, e.ArgsSHA256}
			switch e.Kind {
			case vocab.KindCallAllowed:
				if owned == nil || owned[e.Seq] {
					open[k] = append(open[k], e)
					bySeq[e.Seq] = true
				}
			case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
				if owned != nil && e.ArgsSeq != 0 {
					if bySeq[e.ArgsSeq] {
						delete(bySeq, e.ArgsSeq)
						open[k] = slices.DeleteFunc(open[k], func(a audit.Entry) bool { return a.Seq == e.ArgsSeq })
					}
					continue
				}
				if owned != nil && !owned[e.Seq] {
					continue
				}
				if q := open[k]; len(q) > 0 {
					delete(bySeq, q[0].Seq)
					open[k] = q[1:]
				}
			}
		}
	}
	var left []audit.Entry
	for _, q := range open {
		left = append(left, q...)
	}
	slices.SortFunc(left, func(a, b audit.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, a := range left {
		if err := g.settleOpenCall(ctx, a); err != nil {
			return seq, fmt.Errorf("guard: settle the call allowed at seq %d: %w", a.Seq, err)
		}
	}
	return seq, nil
}

// settleOpenCall records the outcome of the routine call allowed by entry
// a, which the previous process did not record.
func (g *Guard) settleOpenCall(ctx context.Context, a audit.Entry) error {
	spec, ok := g.opts.Catalog.Lookup(a.Tool)
	// The policy that allowed the call decided it, whatever is loaded now.
	rec := audit.Entry{Agent: a.Agent, Tool: a.Tool, Args: a.Args, ArgsRedact: a.ArgsRedact,
		ArgsSHA256: a.ArgsSHA256, Decision: a.Decision, Rule: a.Rule, PolicySHA256: a.PolicySHA256,
		GrantID: a.GrantID, GrantSeq: a.GrantSeq}
	if a.V >= 3 {
		// Format 3: the outcome names the call.allowed holding the args.
		rec.Args, rec.ArgsSeq = nil, a.Seq
	}
	where := fmt.Sprintf(" (allowed at seq %d)", a.Seq)
	switch {
	case ok && spec.Recover != nil:
		var args map[string]any
		if len(a.Args) > 0 {
			if err := json.Unmarshal(a.Args, &args); err != nil {
				return fmt.Errorf("arguments: %w", err)
			}
		}
		res, done, err := spec.Recover(ctx, &tools.Call{Args: args, Agent: a.Agent, ID: entryCallID(a.Seq)})
		if err != nil {
			return fmt.Errorf("ask %s whether the call took effect: %w", a.Tool, err)
		}
		if done {
			_, _, rec, _ = g.executed(spec, res, rec)
			rec.Reason = noteRecovered + where
		} else {
			rec.Kind, rec.Reason = vocab.KindCallFailed, noteNeverRan+where
		}
	default:
		// Not a decision: it names no policy.
		rec.Kind, rec.Reason, rec.PolicySHA256 = vocab.KindCallInterrupted, noteInterrupted+where, ""
	}
	if _, err := g.opts.Audit.Append(ctx, rec); err != nil {
		return err
	}
	if rec.Kind == vocab.KindCallFailed {
		// It never ran: its share goes back. An interrupted call may have
		// acted, and keeps counting.
		g.usage.release(g.shares().ofEntry(ctx, a))
	}
	g.log.Warn("recorded the outcome of a routine call the previous process left open",
		"tool", a.Tool, "allowed_seq", a.Seq, "kind", rec.Kind)
	return nil
}

// advanceMark moves the routine-call mark as far as this process's calls
// allow (see routine.Calls.SafeMark).
func (g *Guard) advanceMark(ctx context.Context) {
	if g.opts.Marks == nil {
		return
	}
	mark, ok := g.routine.SafeMark()
	if !ok || mark <= g.lastMark.Load() {
		return
	}
	if err := g.opts.Marks.SetMark(ctx, markRoutine, mark); err != nil {
		g.log.Warn("cannot move the routine-call mark", "err", err)
		return
	}
	if g.opts.Owner != "" {
		if err := g.opts.Marks.SetMark(ctx, RoutineMark(g.opts.Owner), mark); err != nil {
			g.log.Warn("cannot move this replica's routine-call mark", "err", err)
			return
		}
	}
	g.lastMark.Store(mark)
}

// markLoop moves the mark now and then, so that settling after a crash
// reads only the end of the log.
func (g *Guard) markLoop(every time.Duration) {
	defer g.bg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.life.Done():
			return
		case <-t.C:
			g.advanceMark(g.life)
		}
	}
}
