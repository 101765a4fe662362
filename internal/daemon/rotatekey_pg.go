package daemon

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// rotateOnPostgres is audit rotate-key on the log in store.url. The
// replicas read the server key once, at start, and check it against the
// server_key row (claimServerKey), so every replica must be stopped: a
// live one would go on signing with the retired key. The key.rotated
// entry and the server_key row's move to next commit in one transaction,
// so a replica started afterwards with the old key file is refused,
// naming both keys, and none finds the row and the log disagreeing.
func rotateOnPostgres(ctx context.Context, c *config.Config, next ed25519.PrivateKey, reason string, opts audit.Options) (previous string, committed bool, err error) {
	db, err := OpenStore(ctx, c)
	if err != nil {
		return "", false, err
	}
	defer db.Close()
	if db.Dialect() != store.PostgreSQL {
		return "", false, fmt.Errorf("store.url names a %s database, not PostgreSQL", db.Dialect())
	}
	if err := replicasStopped(ctx, db); err != nil {
		return "", false, err
	}
	key, err := ServerKey(c)
	if err == nil {
		err = claimServerKey(ctx, db, key)
	}
	if err != nil {
		return "", false, err
	}
	b, err := auditpg.New(ctx, db)
	if err != nil {
		return "", false, err
	}
	opts.Backend = b
	log, err := audit.Open(ctx, db.DB, key, opts)
	if err != nil {
		if log != nil {
			log.Close() // and b with it
		} else {
			b.Close()
		}
		return "", false, fmt.Errorf("audit log: %w", err)
	}
	b.AlsoCommit("move the server_key row to the new key", `UPDATE server_key SET public_key = $1 WHERE id = 1 AND public_key = $2`,
		audit.PublicKeyText(next.Public().(ed25519.PublicKey)), log.PublicKey())
	if previous, committed, err = rotateLog(ctx, log, next, reason); err != nil {
		return previous, committed, err
	}
	// A replica that started while the rotation ran may hold the old key.
	if err := replicasStopped(ctx, db); err != nil {
		return previous, true, fmt.Errorf("the log and server_key name the new key, but %w: stop it; started again with the old key it is refused", err)
	}
	return previous, true, nil
}

// replicasStopped refuses while any replica of db lives: one whose
// session lock is held, or whose row was stamped less than store's grace
// ago (a replica that was killed only just now; rotate again in a few
// seconds). store.Owners tells, fencing a dead one as its peers would.
func replicasStopped(ctx context.Context, db *store.DB) error {
	owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
	if err != nil {
		return err
	}
	var alive []string
	for _, id := range owners.Listed() {
		if !owners.Dead(id) {
			alive = append(alive, id)
		}
	}
	if len(alive) > 0 {
		return fmt.Errorf("replica %s of this database is running (or stopped less than %v ago): stop every replica before audit rotate-key",
			strings.Join(alive, ", "), store.DefaultGrace)
	}
	return nil
}
