package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
)

// Every process writes its audit entries to the outbox under its own owner
// id and appends them itself. When a process dies, the entries it left
// must be appended by another, exactly once and in order; but a process
// that is merely slow must not have its entries appended twice. So each
// process holds its owner's liveness lock (store.Owners) for as long as it
// lives. An owner that store.Owners tells dead has its entries taken at
// once; one it cannot tell about (an older version, or a database in
// memory) has them taken once they are StaleAfter old. Before
// appending an entry another process left, the end of the log is searched
// for it, because that process may have appended it and died before
// deleting it from the outbox.

// SweepOwners removes the lock files of dead owners with nothing in the
// outbox, so that crashes do not leave files behind for ever.
func (o *Outbox) SweepOwners(ctx context.Context) {
	for _, owner := range o.owners.Listed() {
		if owner == o.owner {
			continue
		}
		var n int
		if o.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox WHERE owner = ?`, owner).Scan(&n) != nil || n > 0 {
			continue
		}
		o.owners.Dead(owner) // removes the file if its owner is gone
	}
}

// tailReader is what a Recorder whose end can be read offers (*audit.Log).
type tailReader interface {
	LastSeq(ctx context.Context) (int64, error)
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
}

// inLog reports whether e, put in the outbox at created (Unix ns), is
// already in the log: it searches back from the end over the entries
// appended since then, and returns it as logged. A Recorder that cannot be
// read says no.
func (o *Outbox) inLog(ctx context.Context, e audit.Entry, created int64) (audit.Entry, bool, error) {
	r, ok := o.rec.(tailReader)
	if !ok {
		return audit.Entry{}, false, nil
	}
	last, err := r.LastSeq(ctx)
	if err != nil {
		return audit.Entry{}, false, err
	}
	// The log keeps a long reason cut (audit.Bound): compare it so.
	audit.Bound(&e)
	// The log's clock may lag the outbox's a little.
	since := time.Unix(0, created).Add(-time.Second)
	const page = 256
	for hi := last; hi > 0; {
		lo := max(hi-page, 0)
		entries, err := r.Since(ctx, lo, int(hi-lo))
		if err != nil {
			return audit.Entry{}, false, err
		}
		for i := len(entries) - 1; i >= 0; i-- {
			x := entries[i]
			if t, err := time.Parse(time.RFC3339Nano, x.Time); err == nil && t.Before(since) {
				return audit.Entry{}, false, nil
			}
			if sameEntry(x, e) {
				return x, true, nil
			}
		}
		hi = lo
	}
	return audit.Entry{}, false, nil
}

// sameEntry compares the fields that tell one approval entry from
// another: no two different entries agree on all of them.
func sameEntry(a, b audit.Entry) bool {
	return a.Kind == b.Kind && a.RequestID == b.RequestID && a.Agent == b.Agent && a.Tool == b.Tool &&
		a.Approver == b.Approver && a.CredentialID == b.CredentialID && a.Signature == b.Signature &&
		a.Decision == b.Decision && a.ExpiresAt == b.ExpiresAt && a.Reason == b.Reason &&
		a.InterruptedSeq == b.InterruptedSeq
}

// Liveness tells, for one recovery pass, which owners live: this Outbox,
// and another only while its liveness lock is held (listed and not
// dead). An owner with no lock at all (released, from before owners were
// recorded, or on a store where nobody can be told dead) is gone: nobody
// waits on what it left. Read the rows to settle first and ask after: a
// process holds its lock before it writes, so a row read first cannot
// belong to an owner that takes its lock later and is taken for gone.
type Liveness struct {
	o      *Outbox
	listed map[string]bool // nil until first asked
	known  map[string]bool
}

// Liveness starts a recovery pass's view of which owners live.
func (o *Outbox) Liveness() *Liveness { return &Liveness{o: o, known: map[string]bool{}} }

// Live reports whether owner's process lives.
func (l *Liveness) Live(owner string) bool {
	if owner == l.o.owner {
		return true
	}
	if v, ok := l.known[owner]; ok {
		return v
	}
	if l.listed == nil {
		l.listed = map[string]bool{}
		for _, o := range l.o.owners.Listed() {
			l.listed[o] = true
		}
	}
	v := l.listed[owner] && !l.o.owners.Dead(owner)
	l.known[owner] = v
	return v
}

// IsListed reports whether owner holds (or held, if dead) a liveness lock:
// an unlisted owner's outbox entries are taken only once stale, since it
// may be a process that could not take its lock.
func (l *Liveness) IsListed(owner string) bool {
	l.Live(owner)
	return owner == l.o.owner || l.listed[owner]
}

// LivePeers reports whether another replica on this PostgreSQL database
// holds its liveness lock: what the log shows in flight may be its. On
// SQLite one server owns the file (other processes there are commands,
// which make no calls), and without Options.Owners recovery acts as if
// alone: no.
func (o *Outbox) LivePeers(ctx context.Context) (bool, error) {
	if o.db.Dialect() != store.PostgreSQL {
		return false, nil
	}
	l := o.Liveness()
	for _, peer := range o.owners.Listed() {
		if peer != o.owner && l.Live(peer) {
			return true, nil
		}
	}
	return false, nil
}

// DeadPeers returns the other replicas on this PostgreSQL database that
// are dead (and so fenced, store.Owners.Dead): the reaper settles the
// routine calls they left. On SQLite: none.
func (o *Outbox) DeadPeers(ctx context.Context) ([]string, error) {
	if o.db.Dialect() != store.PostgreSQL {
		return nil, nil
	}
	l := o.Liveness()
	var dead []string
	for _, peer := range o.owners.Listed() {
		if !l.Live(peer) {
			dead = append(dead, peer)
		}
	}
	return dead, nil
}

// ForgetReplicas deletes the rows of the replicas dead (as DeadPeers named
// them before a reap settled them, guard.Reap) that nothing here still
// needs: no entry of theirs waits in the outbox and no request they
// raised or claimed is pending or approved (a poll-mode one keeps its
// replica's row until it ends). Their rows would otherwise pile up.
func (o *Outbox) ForgetReplicas(ctx context.Context, dead []string) (forgotten []string, err error) {
	for _, id := range dead {
		gone, err := o.owners.Forget(ctx, id, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			var left bool
			err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM approval_outbox WHERE owner = ?)
				OR EXISTS (SELECT 1 FROM approval_requests WHERE state IN ('pending', 'approved') AND (owner = ? OR exec_owner = ?))`,
				id, id, id).Scan(&left)
			return !left, err
		})
		if err != nil {
			return forgotten, fmt.Errorf("approval: forget replica %s: %w", id, err)
		}
		if gone {
			forgotten = append(forgotten, id)
		}
	}
	return forgotten, nil
}
