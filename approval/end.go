package approval

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval/expiring"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Cancel ends a pending request as cancelled. It returns ErrNotPending if
// the request was already decided.
func (s *Service) Cancel(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "cancelled"
	}
	return s.endRequest(ctx, id, vocab.StateCancelled, "", reason)
}

// expire ends the request if its time is up.
func (s *Service) expire(ctx context.Context, id string) bool {
	err := s.expireErr(ctx, id)
	if err != nil {
		s.opts.Logger.Error("approval: expire", "id", id, "err", err)
	}
	return err == nil
}

// expireErr ends the request if its time is up, or says why it could not
// (nil when no longer pending); loops that retry log as they back off.
func (s *Service) expireErr(ctx context.Context, id string) error {
	err := s.endRequest(ctx, id, vocab.StateExpired, "", "nobody decided before expires_at")
	if errors.Is(err, ErrNotPending) {
		return nil
	}
	return err
}

// endRequest moves a pending request to a terminal state without an
// assertion (cancelled, expired), recording it.
func (s *Service) endRequest(ctx context.Context, id string, state vocab.State, by, reason string) error {
	kind := map[vocab.State]vocab.Kind{vocab.StateCancelled: vocab.KindApprovalCancelled, vocab.StateExpired: vocab.KindApprovalExpired}[state]
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		cond := ``
		if state == vocab.StateExpired {
			cond = ` AND expires_at <= ` + fmt.Sprint(s.now().Unix())
		}
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
			WHERE id = ? AND state = 'pending'`+cond, state, by, s.now().UnixNano(), reason, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotPending
		}
		if err := pending.Ended(ctx, tx, id); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, id, s.requestEntry(r, kind, reason))
	})
	if err != nil {
		return err
	}
	err = s.flush(ctx, false)
	s.notify(id)
	return err
}

// requestEntry is the audit entry for r with the fields every request
// entry carries.
func (s *Service) requestEntry(r *row, kind vocab.Kind, reason string) audit.Entry {
	e := audit.Entry{
		Kind:                 kind,
		RequestID:            r.ID,
		Agent:                r.Agent,
		Tool:                 r.Tool,
		ArgsSHA256:           r.argsSHA256,
		Reason:               reason,
		AuthorizationDetails: r.AuthorizationDetails,
		Display:              r.Display,
		Nonce:                base64.RawURLEncoding.EncodeToString(r.nonce),
		ExpiresAt:            digest.FormatTime(r.ExpiresAt),
	}
	// The args are in the request's approval.requested; this entry
	// finds them through request_id (audit format 3).
	e.ArgsRedact = r.redact
	return e
}

// expiryLoop runs the expiry loop (expiring.Loop) until Close: it
// expires requests while this replica leads the sweeps (sweeps.go); on
// every replica it announces expiring requests (each claimed once) and
// appends this process's outbox.
func (s *Service) expiryLoop() {
	defer close(s.done)
	expiring.Loop{Sweeper: sweeper{s}, Now: s.now, Wake: s.watch.Any, Stop: s.stop, Log: s.opts.Logger}.Run()
}

// sweeper is the service's part of the expiry loop (expiring.Sweeper).
type sweeper struct{ s *Service }

func (w sweeper) Next(ctx context.Context) (time.Time, bool, error) {
	return expiring.Next(ctx, w.s.db)
}

func (w sweeper) Leading() bool { return w.s.leadingSweeps.Load() }

func (w sweeper) Announce(ctx context.Context) (time.Duration, error) {
	return w.s.announceExpiring(ctx)
}

func (w sweeper) ExpireDue(ctx context.Context) error {
	ids, _ := expiring.Past(ctx, w.s.db, w.s.now())
	for _, id := range ids {
		if err := w.s.expireErr(ctx, id); err != nil {
			return fmt.Errorf("expire request %s: %w", id, err)
		}
		w.s.expiredBySweep.Add(1)
	}
	return w.s.flush(ctx, true)
}

func (w sweeper) FlushQueued(ctx context.Context) error {
	var queued int
	if w.s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox`).Scan(&queued) != nil || queued == 0 {
		return nil
	}
	return w.s.flush(ctx, true)
}
