package approval

import (
	"context"
	"fmt"
	"time"

	"github.com/countersign/countersign/vocab"
)

// PollStatus is a CIBA poll answer.
type PollStatus struct {
	// authorization_pending | slow_down | expired_token | access_denied |
	// approved | executed | failed
	Status  string
	Request *Request
}

// Poll statuses.
const (
	PollPending  = "authorization_pending"
	PollSlowDown = "slow_down"
	PollExpired  = "expired_token"
	PollDenied   = "access_denied"
	PollApproved = "approved"
	PollExecuted = "executed"
	PollFailed   = "failed"
	// PollInterrupted: the server stopped while the request ran; whether
	// it took effect is unknown, and it is not run again.
	PollInterrupted = "interrupted"
)

// SlowDownStep is what CIBA (and RFC 8628) add to the polling interval of
// a client that polled too fast.
const SlowDownStep = 5 * time.Second

// Poll answers a CIBA poll. Only the agent that created the request may
// poll it (others get ErrNotFound); polling faster than Interval gets
// slow_down, and Interval grows by SlowDownStep.
func (s *Service) Poll(ctx context.Context, id, agent string) (*PollStatus, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	if r.Agent != agent {
		return nil, ErrNotFound
	}
	now := s.now()
	if _, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET last_poll = ? WHERE id = ?`, now.UnixNano(), id); err != nil {
		return nil, err
	}
	if r.State == vocab.StatePending && !now.Before(r.ExpiresAt) {
		s.expire(ctx, id)
		if r, err = s.load(ctx, s.db, id); err != nil {
			return nil, err
		}
	}
	st := &PollStatus{Request: &r.Request}
	switch r.State {
	case vocab.StatePending:
		st.Status = PollPending
		if r.lastPoll != 0 && now.Sub(time.Unix(0, r.lastPoll)) < r.Interval {
			st.Status = PollSlowDown
			// CIBA: a client told to slow down adds SlowDownStep to its
			// interval for this and every later poll, so from now on the
			// longer interval is the one it must keep.
			r.Interval += SlowDownStep
			if _, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET interval_ms = ? WHERE id = ?`, r.Interval.Milliseconds(), id); err != nil {
				return nil, err
			}
		}
	case vocab.StateApproved:
		st.Status = PollApproved
	case vocab.StateExpired:
		st.Status = PollExpired
	case vocab.StateDenied, vocab.StateCancelled:
		st.Status = PollDenied
	case vocab.StateExecuted:
		st.Status = PollExecuted
	case vocab.StateFailed:
		st.Status = PollFailed
	case vocab.StateInterrupted:
		st.Status = PollInterrupted
	default:
		return nil, fmt.Errorf("approval: request %s in unknown state %q", id, r.State)
	}
	return st, nil
}
