package approval

import (
	"context"
	"strings"
	"time"

	"github.com/countersign/countersign/approval/expiring"
	"github.com/countersign/countersign/vocab"
)

// Events reported to Options.Notify.
const (
	EventRequested = "requested"    // after Create recorded the request
	EventApproved  = "approved"     // after the quorum's approval is in the log
	EventDenied    = "denied"       // after the denial is in the log
	EventExpiring  = expiring.Event // once, when expiring.Lead of its lifetime remains
)

// Summary is the request's summary as the server wrote it (the binding
// message without its code): the text a notification may carry. Unlike
// Display it never quotes arguments.
func (r *Request) Summary() string {
	return strings.TrimSuffix(r.BindingMessage, " (code "+r.Code+")")
}

// announce tells Options.Notify about r, on the caller's goroutine: the
// observer must only queue (notify.Notifier.Notify does).
func (s *Service) announce(event string, r *Request) {
	if s.opts.Notify == nil || r == nil {
		return
	}
	c := *r
	s.opts.Notify(event, &c)
}

// announceDecision announces r approved or denied if approver's decision
// is the one that ended it: of two approvers finishing a quorum at once,
// both may read the request approved, but only the last in DecidedBy
// completed it.
func (s *Service) announceDecision(r *Request, approver string) {
	if r == nil {
		return
	}
	by := r.DecidedBy
	if i := strings.LastIndexByte(by, ','); i >= 0 {
		by = by[i+1:]
	}
	if by != approver {
		return
	}
	switch r.State {
	case vocab.StateApproved, vocab.StateExecuted, vocab.StateFailed:
		s.announce(EventApproved, r)
	case vocab.StateDenied:
		s.announce(EventDenied, r)
	}
}

// announceExpiring announces each pending request that has entered its
// expiring.Lead, once (expiring.Announce).
func (s *Service) announceExpiring(ctx context.Context) (time.Duration, error) {
	if s.opts.Notify == nil {
		return time.Hour, nil
	}
	return expiring.Announce(ctx, s.db, s.now(), s.opts.Logger, func(id string) {
		if r, err := s.Get(ctx, id); err == nil && r.State == vocab.StatePending {
			s.announce(EventExpiring, r)
		}
	})
}
