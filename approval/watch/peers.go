package watch

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/countersign/countersign/store"
)

// Replicas on PostgreSQL change the same requests: a decision taken on
// B's page must wake the call waiting on A, A's guard dispatcher and
// every page's stream. So each transaction that changes a request also
// announces it on the database (Announce: pg_notify, sent if and only if
// the transaction commits), and every process hands what it hears to its
// own waiters, as if the change were its own; waking this process's own
// waiters stays the caller's, after the commit (Hub.Notify). A process
// hears its own changes back: its waiters reread once more. Waiters still
// reread every rereadEvery: a notification lost while the listener
// reconnects is covered by the "" that follows, and one lost any other
// way by that backstop.

// changesChannel is the notification channel of request changes.
const changesChannel = "approval_changes"

// Announce tells the other processes on db, once tx commits, that
// request id changed ("": any may have). tx must be one db.InTx runs; its
// error fails the transaction, so that no change commits unannounced. On
// SQLite one process uses the database: nothing to do.
func Announce(ctx context.Context, db *store.DB, tx *sql.Tx, id string) error {
	if db.Dialect() != store.PostgreSQL {
		return nil
	}
	return db.Publish(ctx, tx, changesChannel, id)
}

// Listen hands the changes other processes publish on db to h's waiters
// until ctx ends.
func (h *Hub) Listen(ctx context.Context, db *store.DB, log *slog.Logger) {
	if db.Dialect() != store.PostgreSQL {
		return
	}
	err := db.Subscribe(ctx, changesChannel, func(id string) {
		if id == "" {
			h.Notify()
			return
		}
		h.Notify(id)
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("approval: not listening to the other replicas' changes; waiters see them at their next reread", "err", err)
	}
}
