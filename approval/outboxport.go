package approval

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/countersign/countersign/approval/outbox"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
)

// outboxStaleAfter is how long another process's unflushed entries wait
// before this one appends them.
const outboxStaleAfter = outbox.StaleAfter

func (s *Service) enqueue(ctx context.Context, tx *sql.Tx, requestID string, e audit.Entry) error {
	return s.ob.Enqueue(ctx, tx, requestID, e)
}
func (s *Service) flush(ctx context.Context, stale bool) error     { return s.ob.Flush(ctx, stale) }
func (s *Service) record(ctx context.Context, e audit.Entry) error { return s.ob.Record(ctx, e) }
func (s *Service) liveness() *outbox.Liveness                      { return s.ob.Liveness() }

// LivePeers reports whether another replica on this PostgreSQL database
// holds its liveness lock (outbox.Outbox.LivePeers).
func (s *Service) LivePeers(ctx context.Context) (bool, error) { return s.ob.LivePeers(ctx) }

// DeadPeers returns the other replicas on this PostgreSQL database that
// are dead (outbox.Outbox.DeadPeers).
func (s *Service) DeadPeers(ctx context.Context) ([]string, error) { return s.ob.DeadPeers(ctx) }

// ForgetReplicas deletes the rows of the dead replicas nothing here still
// needs (outbox.Outbox.ForgetReplicas).
func (s *Service) ForgetReplicas(ctx context.Context, dead []string) ([]string, error) {
	return s.ob.ForgetReplicas(ctx, dead)
}

// holdOwner takes this Service's liveness lock and returns its release.
// It also removes the files of dead owners that left nothing behind.
// Without a lock a SQLite process goes on (what it leaves waits until
// stale); a replica given Options.Owners must not: every write in its
// name would be refused (Unfenced), and its peers could not tell it
// alive.
func (s *Service) holdOwner(ctx context.Context) (func(), error) {
	if s.opts.Owner != "" {
		return func() {}, nil // the caller holds it
	}
	release, err := s.owners.Hold(s.owner)
	if err != nil && s.opts.Owners != nil && s.db.Dialect() == store.PostgreSQL {
		return nil, fmt.Errorf("approval: take this replica's liveness lock: %w", err)
	}
	if err != nil {
		s.opts.Logger.Warn("approval: no liveness lock; entries this process leaves behind wait until they are stale", "err", err)
		return func() {}, nil
	}
	s.ob.SweepOwners(ctx)
	return release, nil
}

// outboxPort is this service's outbox as packages ceremony and reconcile
// use it.
type outboxPort struct{ s *Service }

func (o outboxPort) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return o.s.db.InTx(ctx, fn)
}
func (o outboxPort) Enqueue(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	return o.s.enqueue(ctx, tx, "", e)
}
func (o outboxPort) Flush(ctx context.Context) error                 { return o.s.flush(ctx, false) }
func (o outboxPort) Record(ctx context.Context, e audit.Entry) error { return o.s.record(ctx, e) }
