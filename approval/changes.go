package approval

import (
	"context"
	"database/sql"
	"strings"

	"github.com/countersign/countersign/store"
)

// Replicas on one PostgreSQL database each wake their own waiters (Await,
// OnChange hooks: the guard's dispatcher, the page's SSE) when they change
// a request; a change made on another replica reaches them as a
// notification on changeChannel. It is published after the change's
// entries are appended, as the local wake-up is, never inside the
// state-changing transaction: a waiter woken before the log has the
// decision would find its request still in the outbox (BeginExecution
// refuses that). rereadEvery stays the backstop for a lost notification.
//
// On SQLite there is one process per file and nothing is published.

// changeChannel is the store notification channel of request changes. A
// payload is the publishing Service's owner id, a space and the request
// id ("" for a change that may concern any), so that a Service skips what
// it published itself: it woke its own waiters already.
const changeChannel = "countersign_approval"

// notify wakes the waiters on the requests ids, or, given no ids, every
// waiter; on PostgreSQL it also tells the other replicas.
func (s *Service) notify(ids ...string) {
	s.watch.Notify(ids...)
	if s.db.Dialect() != store.PostgreSQL {
		return
	}
	if len(ids) == 0 {
		ids = []string{""}
	}
	err := s.inTx(context.Background(), func(tx *sql.Tx) error {
		for _, id := range ids {
			if err := s.db.Publish(context.Background(), tx, changeChannel, s.owner+" "+id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The other replicas read the request again within rereadEvery.
		s.opts.Logger.Warn("approval: telling other replicas of a change", "ids", ids, "err", err)
	}
}

// subscribeChanges wakes this Service's waiters at the changes other
// replicas publish, until stop is closed.
func (s *Service) subscribeChanges(ctx context.Context, stop <-chan struct{}) {
	if s.db.Dialect() != store.PostgreSQL {
		return
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-stop
		cancel()
	}()
	err := s.db.Subscribe(sctx, changeChannel, func(payload string) {
		owner, id, _ := strings.Cut(payload, " ")
		switch {
		case payload == "": // notifications were lost: reread everything
			s.watch.Notify()
		case owner == s.owner:
		case id == "":
			s.watch.Notify()
		default:
			s.watch.Notify(id)
		}
	})
	if err != nil {
		s.opts.Logger.Warn("approval: no notifications from other replicas; they are read again every "+rereadEvery.String(), "err", err)
	}
}
