package daemon

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// ServerKey is the server's signing key: audit.key_file, else server.key
// in the data directory. On SQLite a missing server.key is created, as
// always. On PostgreSQL it is not: replicas that each made a key of their
// own would sign one chain with keys no single public key verifies, and
// seal results (resultKey) no other replica opens. With audit.pkcs11 the
// key is in a token and there is no file to read: see [ServerSigner].
func ServerKey(c *config.Config) (ed25519.PrivateKey, error) {
	if c.Audit.PKCS11.Enabled() {
		return nil, errors.New("the server key is in a PKCS #11 token (audit.pkcs11), not a file")
	}
	if c.Audit.KeyFile != "" {
		return audit.LoadKey(c.Audit.KeyFile)
	}
	if c.Store.URL == "" {
		return audit.LoadOrCreateKey(c.Server.DataDir)
	}
	path := filepath.Join(c.Server.DataDir, audit.KeyFile)
	key, err := audit.LoadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no server key at %s, and on PostgreSQL (store.url) a replica never makes one of its own: "+
			"make one with `countersign audit keygen --out FILE` (or take server.key from an earlier data directory), "+
			"give the same file to every replica and point audit.key_file at it", path)
	}
	return key, err
}

// serverKeyDDL holds the public key of the replicas that share a
// PostgreSQL database: the first to start records it.
const serverKeyDDL = `CREATE TABLE IF NOT EXISTS server_key (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	public_key TEXT NOT NULL
)`

// claimServerKey records key's public key in db if none is recorded, and
// refuses a key other than the recorded one, naming both. On SQLite one
// data directory holds both the database and its key: nothing to check.
func claimServerKey(ctx context.Context, db *store.DB, key audit.Signer) error {
	if db.Dialect() != store.PostgreSQL {
		return nil
	}
	ours := audit.PublicKeyText(key.Public().(ed25519.PublicKey))
	var recorded string
	if err := db.CreateTables(ctx, serverKeyDDL); err != nil {
		return fmt.Errorf("recording the server key in the database: %w", err)
	}
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO server_key (id, public_key) VALUES (1, ?) ON CONFLICT (id) DO NOTHING`, ours); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT public_key FROM server_key WHERE id = 1`).Scan(&recorded)
	})
	if err != nil {
		return fmt.Errorf("recording the server key in the database: %w", err)
	}
	if recorded != ours {
		return fmt.Errorf("this replica's server key is %s, but the replicas of this database sign with %s: "+
			"give every replica the same key file (audit.key_file)", ours, recorded)
	}
	return nil
}
