package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/store"
)

// holdReplica makes this process an owner of the database: on
// PostgreSQL a row of the replicas table and a session lock, by which its
// peers tell whether it lives (store.OwnersFor). A replica its peers
// found dead and fenced must stop at once, since they now act for it:
// Run ends with the reason, and the process exits non-zero. On SQLite
// serve.lock already says the one process lives.
func (s *Stack) holdReplica(ctx context.Context, log *slog.Logger) error {
	s.fatal = make(chan error, 1)
	if s.db.Dialect() != store.PostgreSQL {
		return nil
	}
	owners, err := store.OwnersFor(ctx, s.db, store.OwnerOptions{
		Logger: log.With("component", "store"),
		OnFenced: func(id string) {
			err := fmt.Errorf("replica %s was found dead by its peers and fenced: they act for it now, so it stops", id)
			log.Error("fenced: shutting down", "replica", id)
			select {
			case s.fatal <- err:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	s.owners = owners
	if s.release, err = owners.Hold(s.owner); err != nil {
		return fmt.Errorf("holding this replica's row in the database: %w", err)
	}
	log.Info("replica", "id", s.owner)
	return nil
}

// lead runs the duties one replica at a time must do (store's Lead):
// the audit checkpoints and keeping the witnesses, which sign and
// submit each checkpoint once rather than once per replica. On SQLite
// this process always leads. A replica that led until it shut down
// gives the witnesses the final checkpoint (witnessFinal); the others
// leave it to the leader.
func (s *Stack) lead(ctx context.Context, c *config.Config, log *slog.Logger) {
	s.leading.Store(s.db.Dialect() != store.PostgreSQL) // not waiting for the goroutine
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.db.Lead(lctx, "audit", func(ctx context.Context) {
			log.Info("leading: audit checkpoints and witnesses")
			s.leading.Store(true)
			var wg sync.WaitGroup
			wg.Go(func() { s.audit.CheckpointLoop(ctx, c.Audit.CheckpointEvery) })
			wg.Go(func() { s.keepWitnesses(ctx, c, log) })
			wg.Go(func() { s.exportAudit(ctx, c, log) })
			wg.Wait()
			if lctx.Err() == nil {
				s.leading.Store(false) // lost, not shutting down
			}
		})
	}()
	s.stopLeading = func() { cancel(); <-done }
}

// reapEvery is how often the reaper looks for what dead replicas left.
const reapEvery = 2 * time.Second

// startReaping has the replica that leads "reaper" settle, while all
// serve, what dead replicas left (guard.Reap): their callers get
// "server restarted", their claimed runs one outcome, their poll and
// task requests go on here. Call it once Resume has run.
func (s *Stack) startReaping(log *slog.Logger) {
	if s.owners == nil {
		return
	}
	// A forgotten replica's routine-call mark goes with its row.
	s.owners.AlsoForget(auditpg.Owned{DB: s.db}.ForgetMark(guard.RoutineMark))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.db.Lead(ctx, "reaper", func(ctx context.Context) {
			t := time.NewTicker(reapEvery)
			defer t.Stop()
			deadFor := map[string]int{}
			for {
				s.reap(ctx, log, deadFor)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}()
	s.stopReaping = func() { cancel(); <-done }
}

// forgetAfter is how many reap passes in a row, each settling all it
// could, must have found a replica dead before its row is forgotten: the
// fenced row stays a few seconds for an operator to see, and every part
// of a reap has run more than once since the replica was found dead.
const forgetAfter = 3

// reap settles what dead replicas left (guard.Reap) and then forgets the
// rows of those that have been dead for forgetAfter passes and have
// nothing left (approval.ForgetReplicas). deadFor counts, per replica,
// the passes that found it dead.
func (s *Stack) reap(ctx context.Context, log *slog.Logger, deadFor map[string]int) {
	dead, err := s.approvals.DeadPeers(ctx)
	if err == nil {
		err = s.guard.Reap(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("reaping what dead replicas left", "err", err)
		}
		return
	}
	var ripe []string
	seen := make(map[string]int, len(dead))
	for _, id := range dead {
		if seen[id] = deadFor[id] + 1; seen[id] >= forgetAfter {
			ripe = append(ripe, id)
		}
	}
	clear(deadFor)
	maps.Copy(deadFor, seen)
	gone, err := s.approvals.ForgetReplicas(ctx, ripe)
	if len(gone) > 0 {
		log.Info("forgot dead replicas with nothing left to settle", "replicas", gone)
	}
	if err != nil && ctx.Err() == nil {
		log.Warn("forgetting dead replicas", "err", err)
	}
}

// replicaOwner is this replica's id for the guard's own routine-call mark
// on PostgreSQL; on SQLite one process uses the database: none.
func (s *Stack) replicaOwner() string {
	if s.db.Dialect() != store.PostgreSQL {
		return ""
	}
	return s.owner
}

// ownedEntries tells the reaper which entries a dead replica appended, on
// PostgreSQL; nil on SQLite.
func (s *Stack) ownedEntries() guard.Owned {
	if s.db.Dialect() != store.PostgreSQL {
		return nil
	}
	return auditpg.Owned{DB: s.db}
}
