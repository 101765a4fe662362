package approval

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
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

// expireErr ends the request if its time is up, and returns why it could
// not: nil also when the request was no longer pending. Loops that retry
// call it and log as their back-off says.
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

// expiryBackoff spaces the expiry loop's rounds while what it must
// write cannot be written (a full disk): one round, and one log line,
// per step, instead of a round every time a request is touched.
var expiryBackoff = store.Backoff{First: 100 * time.Millisecond, Max: 30 * time.Second}

// expiryLoop expires pending requests whose time is up, whether or not
// anyone waits or looks, while this replica leads the sweeps (sweeps.go);
// on every replica it announces expiring requests (each claimed once) and
// appends this process's outbox. A round that cannot write backs off
// (expiryBackoff), and changes do not wake it until one writes again.
func (s *Service) expiryLoop() {
	defer close(s.done)
	ctx := context.Background()
	failed := 0 // rounds in a row that could not write
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
		var roundErr error // the first write this round could not make
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
				// One failure stands for the rest: they would fail alike.
				if roundErr = s.expireErr(ctx, id); roundErr != nil {
					roundErr = fmt.Errorf("expire request %s: %w", id, roundErr)
					break
				}
				s.expiredBySweep.Add(1)
			}
			if err := s.flush(ctx, true); err != nil && roundErr == nil {
				roundErr = fmt.Errorf("outbox flush: %w", err)
			}
			wait = 50 * time.Millisecond
		}
		d, err := s.announceExpiring(ctx)
		if d < wait {
			wait = max(d, 10*time.Millisecond)
		}
		roundErr = cmp.Or(roundErr, err)
		// Retry entries a failed append or another process left behind, so
		// a recovered log catches up without anyone asking.
		var queued int
		if roundErr == nil && s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox`).Scan(&queued) == nil && queued > 0 {
			if err := s.flush(ctx, true); err != nil {
				roundErr = fmt.Errorf("outbox flush (%d queued): %w", queued, err)
			}
		}
		wake := s.watch.Any()
		switch {
		case roundErr != nil:
			failed++
			wait, wake = expiryBackoff.Pause(failed), nil
			s.opts.Logger.Error("approval: expiry loop cannot write; backing off", "err", roundErr, "failures", failed, "retry_in", wait.Round(time.Millisecond))
		case failed > 0:
			s.opts.Logger.Info("approval: expiry loop writes again", "after_failures", failed)
			failed = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}
