package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/vocab"
)

// The kill switch. A freeze names an agent (or freeze.AllAgents) and who froze
// it. From its commit on, whatever process wrote it:
//
//   - the guard refuses every call of the agent (it asks Frozen first);
//   - no request of the agent can be raised (Create checks in its
//     transaction), decided (countDecision) or claimed for its run
//     (BeginExecution, which ends an approved request it refuses as
//     failed, so it never runs later);
//   - its pending requests are cancelled and its standing grants revoked
//     (freeze.Stop, through freezeEnds), in the freeze's transaction as
//     far as this process can order their entries in the log after the
//     entries that raised them, and the rest by the process whose outbox
//     holds those (enforceFreezes), which watches for freezes written
//     elsewhere (watchFreezes) and wakes its waiters.
//
// A call already running finishes. Unfreeze lifts the freeze; what it
// cancelled and revoked stays so.

// The freeze's record, its errors and freeze.AllAgents are package freeze's.

// ErrFrozenCheck is a freeze as a decision check: a tap on a request of a
// frozen agent is refused and recorded as approval.rejected with it.
var ErrFrozenCheck = &ceremony.CheckError{Check: "agent_frozen"}

// frozenCheck refuses a decision on a request of a frozen agent, with a
// check name for approval.rejected.
func frozenCheck(ctx context.Context, q querier, agent string) error {
	f, err := freeze.In(ctx, q, agent)
	if err != nil || f == nil {
		return err
	}
	return ceremony.Failf(ErrFrozenCheck, "%v", &freeze.FrozenError{Freeze: *f})
}

// Frozen returns the freeze that holds agent, or nil. It reads the
// database every time, so a freeze written by another process holds from
// the next call on.
func (s *Service) Frozen(ctx context.Context, agent string) (*freeze.Freeze, error) {
	return s.frozen.Frozen(ctx, agent)
}

// Freezes lists the freezes in force, oldest first.
func (s *Service) Freezes(ctx context.Context) ([]freeze.Freeze, error) {
	return freeze.List(ctx, s.db)
}

// Stopped is what a freeze ended at once.
type Stopped struct {
	Cancelled []string // pending requests cancelled
	Revoked   []string // standing grants revoked
}

// FreezeAgent freezes agent (freeze.AllAgents: every agent) and records
// agent.frozen with by as who did it. In the same transaction it cancels
// the agent's pending requests and revokes its standing grants, each
// recorded (approval.cancelled, grant.revoked). An agent already frozen
// is left as it is: the existing freeze is returned in a *freeze.FrozenError.
func (s *Service) FreezeAgent(ctx context.Context, agent, by, reason string) (*Stopped, error) {
	if !freeze.ValidAgent(agent) {
		return nil, fmt.Errorf("%w: agent name %q", ErrInvalidRequest, agent)
	}
	if by == "" {
		return nil, fmt.Errorf("%w: who freezes the agent is required", ErrInvalidRequest)
	}
	reason = authzdetails.Clean(reason, 300)
	var stopped *Stopped
	// stopped is set by each run, so it is the committed run's.
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if err := freeze.Put(ctx, tx, freeze.Freeze{Agent: agent, By: by, At: now, Reason: reason}); err != nil {
			return err
		}
		why := "frozen"
		if reason != "" {
			why += ": " + reason
		}
		if err := s.enqueue(ctx, tx, "", audit.Entry{Kind: vocab.KindAgentFrozen, Agent: agent, Approver: by,
			DecidedAt: now.UTC().Format(audit.TimeFormat), Reason: why}); err != nil {
			return err
		}
		c, r, err := freeze.Stop(ctx, tx, freeze.Freeze{Agent: agent, By: by, At: now}, now, freezeEnds{s})
		stopped = &Stopped{Cancelled: c, Revoked: r}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Logger.Warn("approval: agent frozen", "agent", agent, "by", by, "cancelled", len(stopped.Cancelled), "revoked", len(stopped.Revoked))
	err = s.flush(ctx, false)
	s.notify()
	return stopped, err
}

// UnfreezeAgent lifts agent's freeze (freeze.AllAgents: the freeze of every
// agent; freezes of single agents stay) and records agent.unfrozen.
func (s *Service) UnfreezeAgent(ctx context.Context, agent, by, reason string) error {
	if !freeze.ValidAgent(agent) {
		return fmt.Errorf("%w: agent name %q", ErrInvalidRequest, agent)
	}
	if by == "" {
		return fmt.Errorf("%w: who unfreezes the agent is required", ErrInvalidRequest)
	}
	reason = authzdetails.Clean(reason, 300)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := freeze.Lift(ctx, tx, agent); err != nil {
			return err
		}
		why := "unfrozen"
		if reason != "" {
			why += ": " + reason
		}
		return s.enqueue(ctx, tx, "", audit.Entry{Kind: vocab.KindAgentUnfrozen, Agent: agent, Approver: by,
			DecidedAt: s.now().UTC().Format(audit.TimeFormat), Reason: why})
	})
	if err != nil {
		return err
	}
	s.opts.Logger.Warn("approval: agent unfrozen", "agent", agent, "by", by)
	err = s.flush(ctx, false)
	s.notify()
	return err
}

// freezeEnds is this service as package freeze ends what a freeze holds
// through it: one request or grant at a time, recorded through the outbox.
type freezeEnds struct{ s *Service }

func (e freezeEnds) Owner() string { return e.s.owner }

func (e freezeEnds) CancelRequest(ctx context.Context, tx *sql.Tx, id, reason string, now time.Time) (bool, error) {
	r, err := e.s.load(ctx, tx, id)
	if err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_at = ?, reason = ? WHERE id = ? AND state = 'pending'`,
		vocab.StateCancelled, now.UnixNano(), reason, id)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, nil
	}
	if err := pending.Ended(ctx, tx, id); err != nil {
		return false, err
	}
	return true, e.s.enqueue(ctx, tx, id, e.s.requestEntry(r, vocab.KindApprovalCancelled, reason))
}

func (e freezeEnds) RevokeGrant(ctx context.Context, tx *sql.Tx, id, by, reason string, now time.Time) (bool, error) {
	gs, err := e.s.grants.Query(ctx, tx, `g.id = ?`, id)
	if err != nil || len(gs) != 1 {
		return false, errors.Join(err, grant.ErrNoGrant)
	}
	g := gs[0]
	if err := grant.Revoke(ctx, tx, g.ID, by, now); errors.Is(err, grant.ErrRevoked) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	// As RevokeGrant: queued under no request, its grant_seq filled in
	// when appended if the approval is not logged yet.
	return true, e.s.enqueue(ctx, tx, "", audit.Entry{
		Kind: vocab.KindGrantRevoked, Agent: g.Agent, Tool: g.Tool, GrantID: g.ID, GrantSeq: g.Seq,
		Approver: by, DecidedAt: now.UTC().Format(audit.TimeFormat),
		Reason: fmt.Sprintf("%s, after %d of %d calls", reason, g.Used, g.MaxCalls),
	})
}

// enforceFreezes ends what the freezes in force hold and a freeze's own
// transaction left to this process (freeze.Enforce).
func (s *Service) enforceFreezes(ctx context.Context) error {
	ended, err := freeze.Enforce(ctx, s.db, s.now, freezeEnds{s})
	if ended > 0 {
		s.opts.Logger.Warn("approval: ended requests and grants of frozen agents", "count", ended)
	}
	if err != nil {
		return err
	}
	return s.flush(ctx, false)
}

// watchFreezes wakes every waiter (and the guard's parked requests) when
// a freeze or unfreeze was committed, by this process or another, and
// ends what the freeze holds that only this process may end.
func (s *Service) watchFreezes() {
	defer close(s.freezesDone)
	freeze.Watch(s.db, s.stop, func(ctx context.Context) error {
		err := s.enforceFreezes(ctx)
		if err != nil {
			s.opts.Logger.Error("approval: cannot end the requests and grants of a frozen agent", "err", err)
		}
		s.notify()
		return err
	}, s.opts.Logger)
}

// failFrozen ends approved request id, not yet claimed, as failed without
// running it: its agent was frozen after the approval. Recorded as
// call.failed in the same transaction.
func (s *Service) failFrozen(ctx context.Context, id string, f *freeze.Freeze) error {
	ferr := &freeze.FrozenError{Freeze: *f}
	msg, _ := json.Marshal(map[string]string{"error": "not run: " + ferr.Error()})
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET exec_claimed_at = ?, state = ?, result = ?,
			reason = CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END
			WHERE id = ? AND state = 'approved' AND exec_claimed_at = 0`,
			s.now().UnixNano(), vocab.StateFailed, msg, "not run: "+ferr.Error(), "not run: "+ferr.Error(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotApproved
		}
		e := audit.Entry{Kind: vocab.KindCallFailed, Agent: r.Agent, Tool: r.Tool, ArgsSHA256: r.argsSHA256,
			Decision: string(r.Level), Rule: r.rule, RequestID: r.ID, Reason: "not run: " + ferr.Error()}
		if r.redact {
			e.ArgsRedact = true
		} else {
			e.Args = r.args
		}
		return s.enqueue(ctx, tx, id, e)
	})
	if err != nil {
		return err
	}
	err = s.flush(ctx, false)
	s.notify(id)
	if err != nil {
		return err
	}
	return ferr
}

// Agents lists the agents the page shows: frozen, with pending requests,
// or with grants in force; the freeze of every agent comes first, as
// freeze.AllAgents.
func (s *Service) Agents(ctx context.Context) ([]freeze.AgentView, error) {
	return freeze.Agents(ctx, s.db, s.now())
}
