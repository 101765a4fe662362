package approval

import (
	"context"
	"strings"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Events reported to Options.Notify.
const (
	EventRequested = "requested" // after Create recorded the request
	EventApproved  = "approved"  // after the quorum's approval is in the log
	EventDenied    = "denied"    // after the denial is in the log
	EventExpiring  = "expiring"  // once, when ExpiringLead of its lifetime remains
)

// ExpiringLead is how long before its expiry a pending request is
// announced as expiring: a fifth of its lifetime, at most a minute. The
// expiry loop looks at least once a second, so the announcement may come up
// to a second late; a request decided or ended before then is not
// announced.
func ExpiringLead(lifetime time.Duration) time.Duration { return min(lifetime/5, time.Minute) }

// createNotified records which once-only announcements were made, so that
// two processes sharing the database, or one restarted, do not repeat them.
const createNotified = `CREATE TABLE IF NOT EXISTS approval_notified (
	request_id TEXT NOT NULL,
	event TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (request_id, event)
)`

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
// ExpiringLead, once. The expiry loop calls it and sleeps no longer than
// the time it returns: until the next request enters its lead.
func (s *Service) announceExpiring(ctx context.Context) time.Duration {
	next := time.Hour
	if s.opts.Notify == nil {
		return next
	}
	now := s.now()
	rows, err := s.db.QueryContext(ctx, `SELECT id, created_at, expires_at FROM approval_requests r
		WHERE state = 'pending' AND expires_at > ? AND expires_at <= ?
		  AND NOT EXISTS (SELECT 1 FROM approval_notified n WHERE n.request_id = r.id AND n.event = ?)`,
		now.Unix(), now.Add(time.Minute).Unix(), EventExpiring)
	if err != nil {
		s.opts.Logger.Warn("approval: looking for expiring requests", "err", err)
		return next
	}
	var due []string
	for rows.Next() {
		var id string
		var created, expires int64
		if rows.Scan(&id, &created, &expires) != nil {
			continue
		}
		exp := time.Unix(expires, 0)
		if until := exp.Sub(now) - ExpiringLead(exp.Sub(time.Unix(0, created))); until <= 0 {
			due = append(due, id)
		} else {
			next = min(next, until)
		}
	}
	rows.Close()
	for _, id := range due {
		res, err := s.db.ExecContext(ctx, `INSERT INTO approval_notified (request_id, event, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING`,
			id, EventExpiring, now.UnixNano())
		if err != nil {
			s.opts.Logger.Warn("approval: claiming an expiring announcement", "id", id, "err", err)
			continue
		}
		if n, _ := res.RowsAffected(); n != 1 {
			continue // another process announced it
		}
		if r, err := s.Get(ctx, id); err == nil && r.State == vocab.StatePending {
			s.announce(EventExpiring, r)
		}
	}
	return next
}
