package daemon

import (
	"context"

	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/server"
	"github.com/countersign/countersign/store"
)

// replicaShared is the state that serve keeps in memory on SQLite, where
// one process uses the database, and in the database on PostgreSQL,
// where every replica must see it: the usage windows of tools whose
// rules read usage (guard.Options.SharedUsage), sign-in sessions
// (page.Options.Sessions) and routine calls' tasks
// (server.Options.RoutineTasks). On SQLite each is nil: memory, as
// before.
type replicaShared struct {
	usage    guard.SharedUsage
	sessions page.Sessions
	tasks    server.RoutineTasks
}

// openReplicaShared opens db's tables of replicaShared on PostgreSQL. The
// fields stay nil interfaces (never typed nil pointers) on SQLite.
func openReplicaShared(ctx context.Context, db *store.DB) (replicaShared, error) {
	var sh replicaShared
	if db.Dialect() != store.PostgreSQL {
		return sh, nil
	}
	usage, err := store.OpenUsageWindows(ctx, db)
	if err != nil {
		return sh, err
	}
	sessions, err := store.OpenSignInSessions(ctx, db)
	if err != nil {
		return sh, err
	}
	tasks, err := store.OpenRoutineTasks(ctx, db)
	if err != nil {
		return sh, err
	}
	sh.usage, sh.sessions, sh.tasks = usage, sessions, tasks
	return sh, nil
}
