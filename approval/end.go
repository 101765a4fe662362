package approval

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

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
	err := s.endRequest(ctx, id, vocab.StateExpired, "", "nobody decided before expires_at")
	if err != nil && !errors.Is(err, ErrNotPending) {
		s.opts.Logger.Error("approval: expire", "id", id, "err", err)
	}
	return err == nil
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

// expiryLoop expires pending requests whose time is up, whether or not
// anyone waits or looks, while this replica leads the sweeps (sweeps.go);
// on every replica it announces expiring requests (each claimed once) and
// appends this process's outbox.
func (s *Service) expiryLoop() {
	defer close(s.done)
	ctx := context.Background()
	for {
		var next sql.NullInt64
		err := s.db.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM approval_requests WHERE state = 'pending'`).Scan(&next)
		if err != nil {
			s.opts.Logger.Error("approval: expiry loop", "err", err)
		}
		wait := time.Second
		if next.Valid {
			if d := time.Unix(next.Int64, 0).Sub(s.now()); d < wait {
				wait = max(d, 0)
			}
		}
		if wait == 0 && !s.leadingSweeps.Load() {
			// The replica leading the sweeps expires it (sweeps.go); a
			// waiter here expires its own request as it reads it.
			wait = time.Second
		}
		if wait == 0 {
			rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= ?`, s.now().Unix())
			var ids []string
			if err == nil {
				for rows.Next() {
					var id string
					if rows.Scan(&id) == nil {
						ids = append(ids, id)
					}
				}
				rows.Close()
			}
			for _, id := range ids {
				if s.expire(ctx, id) {
					s.expiredBySweep.Add(1)
				}
			}
			if err := s.flush(ctx, true); err != nil {
				s.opts.Logger.Warn("approval: outbox flush", "err", err)
			}
			wait = 50 * time.Millisecond
		}
		if d := s.announceExpiring(ctx); d < wait {
			wait = max(d, 10*time.Millisecond)
		}
		// Retry entries a failed append or another process left behind, so
		// a recovered log catches up without anyone asking.
		var queued int
		if s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox`).Scan(&queued) == nil && queued > 0 {
			if err := s.flush(ctx, true); err != nil {
				s.opts.Logger.Warn("approval: outbox flush", "err", err, "queued", queued)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.watch.Any():
		case <-t.C:
		}
		t.Stop()
	}
}
