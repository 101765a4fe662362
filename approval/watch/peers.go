package watch

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/countersign/countersign/store"
)

// Replicas on PostgreSQL change the same requests: a decision taken on
// B's page must wake the call waiting on A, A's guard dispatcher and
// every page's stream. So each change this process makes is also
// published on the database (after it committed), and every process
// hands what it hears to its own waiters, as if the change were its own.
// A process hears its own changes back: its waiters reread once more.
// Waiters still reread every rereadEvery: a notification lost while the
// listener reconnects is covered by the "" that follows, and one lost
// any other way by that backstop.

// changesChannel is the notification channel of request changes.
const changesChannel = "approval_changes"

// Tell tells the other processes on db that requests ids changed ("" :
// any may have). On SQLite one process uses the database: nothing to do.
func Tell(db *store.DB, log *slog.Logger, ids ...string) {
	if db.Dialect() != store.PostgreSQL {
		return
	}
	if len(ids) == 0 {
		ids = []string{""}
	}
	ctx := context.Background()
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if err := db.Publish(ctx, tx, changesChannel, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Warn("approval: cannot tell the other replicas of a change; their waiters see it at their next reread", "err", err)
	}
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
