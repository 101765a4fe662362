package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// Wait modes: how the call that raised a request waits for its decision.
const (
	// WaitBlock: the call holds its connection open until the request is
	// decided, then runs the tool and returns the result. The wait lives
	// in the process; it dies with it.
	WaitBlock = "block"
	// WaitPoll: the call returned the auth_req_id at once and the agent
	// asks approval_status. The server itself runs the tool once approved,
	// in whichever process serves by then.
	WaitPoll = "poll"
	// WaitBackchannel: a CIBA backchannel request. Its client polls the
	// token endpoint and redeems the approval for a token; no tool runs.
	// Like poll mode it outlives the process.
	WaitBackchannel = "backchannel"
	// WaitTask: an MCP task-augmented tool call. The call returned a task
	// (its id is the auth_req_id) and the agent's client asks tasks/get
	// and tasks/result. Otherwise it is poll mode: the server runs the
	// tool once approved, in whichever process serves by then.
	WaitTask = "task"
)

// Reasons a request is cancelled by the server rather than by its caller.
const (
	ReasonRestarted    = "server restarted"
	ReasonShuttingDown = "server shutting down"
)

// migrateWaitMode adds wait_mode to a table created before it existed.
// Requests already stored become block mode: nothing would resume them, and
// the version that raised them cancelled every waiting request when it
// stopped, so a restart cancelling the ones still pending is what their
// agents were promised.
//
// The outbox's kind column (migration 2) lets queries tell entries apart
// without parsing them; entries queued before it get theirs from the
// entry itself.
func (s *Service) migrateWaitMode(ctx context.Context) error {
	return s.db.Migrate(ctx, "approval", func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		// Databases made before schema_version may have it already.
		has, err := store.HasColumn(ctx, tx, d, "approval_requests", "wait_mode")
		if err != nil || has {
			return err
		}
		_, err = tx.ExecContext(ctx, `ALTER TABLE approval_requests ADD COLUMN wait_mode TEXT NOT NULL DEFAULT 'block'`)
		return err
	}, func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		has, err := store.HasColumn(ctx, tx, d, "approval_outbox", "kind")
		if err != nil || has {
			return err
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE approval_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT ''`); err != nil {
			return err
		}
		if d != store.SQLite {
			return nil // a PostgreSQL database has had the column from its start
		}
		_, err = tx.ExecContext(ctx, `UPDATE approval_outbox SET kind = COALESCE(json_extract(entry, '$.kind'), '')`)
		return err
	}, addColumns("owner", "exec_owner"), addColumns("policy_sha256"),
		pending.Recount) // 5: the requests waiting, counted (package pending)
}

// addColumns adds text columns to approval_requests: owner and exec_owner
// (migration 3: who raised a request and who claimed its run, so that a
// start beside live replicas settles only what dead ones left), then
// policy_sha256 (4: the policy that raised it). Older rows hold ”.
func addColumns(cols ...string) store.Migration {
	return func(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
		for _, col := range cols {
			has, err := store.HasColumn(ctx, tx, d, "approval_requests", col)
			if err == nil && !has {
				_, err = tx.ExecContext(ctx, `ALTER TABLE approval_requests ADD COLUMN `+col+` TEXT NOT NULL DEFAULT ''`)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// Restart settles what gone processes left behind (a previous process,
// a dead replica; never a live replica's requests or entries: see
// ofGoneOwners). Call it once at start, before serving anything:
//
//   - It first waits until the audit entries they left in the outbox are
//     in the log, so that the log keeps their order (an entry of an owner
//     that held no liveness lock is taken only once it is
//     outboxStaleAfter old, because that process may still be alive and
//     about to append it).
//   - Every pending block-mode request of theirs is then cancelled with reason
//     [ReasonRestarted], recorded: its caller died with the process, and an
//     approval would run nothing. It can never be approved afterwards.
//
// Pending poll-mode and task requests keep their expiry and approved requests stay
// approved; the caller resumes both (see [Service.Unfinished]). Restart
// returns the ids it cancelled.
func (s *Service) Restart(ctx context.Context) ([]string, error) {
	if err := s.drainForeignOutbox(ctx); err != nil {
		return nil, err
	}
	return s.cancelGoneBlocking(ctx, "restart")
}

// Reap settles what dead replicas left, while this one serves: it
// appends their outbox entries and cancels their pending block-mode
// requests with reason [ReasonRestarted] (their callers died with them),
// as a restart does, and returns them; their poll-mode and task requests
// stay pending for any replica, and come back in unfinished with their
// approved and claimed ones, for the caller to settle as after a restart
// (guard.Reap). One replica (the leader) calls it now and then. Where
// owners cannot be told dead it does nothing: a live peer's requests
// would look gone.
func (s *Service) Reap(ctx context.Context) (cancelled []string, unfinished []Unfinished, err error) {
	if !s.owners.Tracked() {
		return nil, nil, nil
	}
	if err := s.flush(ctx, true); err != nil {
		return nil, nil, fmt.Errorf("approval: reap: %w", err)
	}
	if cancelled, err = s.cancelGoneBlocking(ctx, "reap"); err != nil {
		return cancelled, nil, err
	}
	unfinished, err = s.Unfinished(ctx)
	return cancelled, unfinished, err
}

// cancelGoneBlocking cancels the pending block-mode requests of gone
// owners whose entries are all appended (so the cancellation is logged
// after them), and returns their ids.
func (s *Service) cancelGoneBlocking(ctx context.Context, what string) ([]string, error) {
	ids, err := s.ofGoneOwners(ctx, `SELECT id, owner, '' FROM approval_requests r
		WHERE state = 'pending' AND wait_mode = ?
		  AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = r.id AND o.owner <> ?)
		ORDER BY created_at`, WaitBlock, s.owner)
	if err != nil {
		return nil, fmt.Errorf("approval: %s: %w", what, err)
	}
	var cancelled []string
	for _, id := range ids {
		err := s.endRequest(ctx, id, vocab.StateCancelled, "", ReasonRestarted)
		if errors.Is(err, ErrNotPending) {
			continue // expired meanwhile
		}
		if err != nil {
			return cancelled, fmt.Errorf("approval: %s: cancel %s: %w", what, id, err)
		}
		cancelled = append(cancelled, id)
	}
	return cancelled, nil
}

// drainForeignOutbox waits until no entries of gone processes are in the
// outbox (flush takes them); a live replica's entries are its own to
// append, and waiting for a busy one's outbox to empty might never end.
func (s *Service) drainForeignOutbox(ctx context.Context) error {
	deadline := time.Now().Add(outboxStaleAfter + 5*time.Second)
	for logged := false; ; {
		left, err := s.ofGoneOwners(ctx, `SELECT id, owner, '' FROM approval_outbox WHERE owner <> ?`, s.owner)
		if err != nil {
			return fmt.Errorf("approval: restart: %w", err)
		}
		n := len(left)
		if n == 0 {
			return nil
		}
		if !logged {
			s.opts.Logger.Info("approval: waiting for audit entries a previous process left unappended",
				"entries", n, "at_most", outboxStaleAfter)
			logged = true
		}
		if err := s.flush(ctx, true); err != nil {
			return fmt.Errorf("approval: restart: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("approval: restart: %d audit entries of another process are still waiting to be appended after %s; is another countersign serving this data directory?",
				n, outboxStaleAfter)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Unfinished is a request that still needs the server after a restart.
type Unfinished struct {
	Request
	// Args are the canonical arguments the approvers sign over: exactly
	// what runs.
	Args               json.RawMessage
	RedactArgs         bool
	Rule, PolicySHA256 string // what raised it: rule(s), and the hash of their policy
	// Claimed says BeginExecution took the request: its one run may have
	// started, and it must not be claimed again.
	Claimed bool
}

// Unfinished returns, oldest first, the requests of gone owners (see
// ofGoneOwners: a live replica sees its own to their end) that a server
// must see to their end: pending poll-mode and task requests (run them once approved),
// pending backchannel ones (their client redeems them; their usage shares wait for their end) and
// approved ones, claimed or not. Call it after Restart.
func (s *Service) Unfinished(ctx context.Context) ([]Unfinished, error) {
	ids, err := s.ofGoneOwners(ctx, `SELECT id, owner, exec_owner FROM approval_requests
		WHERE state = 'approved' OR (state = 'pending' AND wait_mode IN (?, ?, ?)) ORDER BY created_at`, WaitPoll, WaitTask, WaitBackchannel)
	if err != nil {
		return nil, fmt.Errorf("approval: unfinished: %w", err)
	}
	out := make([]Unfinished, 0, len(ids))
	for _, id := range ids {
		u, err := s.Stored(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("approval: unfinished %s: %w", id, err)
		}
		out = append(out, *u)
	}
	return out, nil
}

// Stored returns request id with what its one run needs: the approved
// arguments and the rule that raised it.
func (s *Service) Stored(ctx context.Context, id string) (*Unfinished, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	return &Unfinished{Request: r.Request, Args: r.args, RedactArgs: r.redact, Rule: r.rule, PolicySHA256: r.policy, Claimed: r.execClaim > 0}, nil
}

// ofGoneOwners runs query, which selects a row's id, its owner and the
// owner of its claimed run (” if none), and returns the ids of the rows
// whose owners are gone: the claimant if there is one, else the owner.
// Rows of this Service and of live replicas are left to them.
func (s *Service) ofGoneOwners(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	type row struct{ id, owner string }
	var got []row
	for rows.Next() {
		var r row
		var execOwner string
		if err := rows.Scan(&r.id, &r.owner, &execOwner); err != nil {
			rows.Close()
			return nil, err
		}
		if execOwner != "" {
			r.owner = execOwner
		}
		got = append(got, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	l := s.liveness()
	var ids []string
	for _, r := range got {
		if !l.Live(r.owner) {
			ids = append(ids, r.id)
		}
	}
	return ids, nil
}

// Detach makes block-mode request id a poll-mode one when its call stops
// waiting (approval.block_for): a restart resumes it instead of cancelling
// it, and the server runs it once approved.
func (s *Service) Detach(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET wait_mode = ? WHERE id = ? AND wait_mode = ?`, WaitPoll, id, WaitBlock)
	return err
}
