package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// OpenAudit opens the data directory's database and audit log. A log that
// fails its startup check comes back with its *audit.TamperError: it can
// still be read and exported, but it refuses every append.
func OpenAudit(ctx context.Context, c *config.Config, opts audit.Options) (*store.DB, *audit.Log, error) {
	if c.Store.URL != "" {
		// Refused before connecting: half a server, say its approvals on
		// PostgreSQL and its log in a file each replica keeps apart, would
		// be N chains no export shows whole.
		return nil, nil, fmt.Errorf("store.url is %s, but serve cannot run on PostgreSQL yet (the audit log and the replicas' recovery are not wired to it): "+
			"unset store.url (and COUNTERSIGN_STORE_URL) to keep everything in SQLite in the data directory", c.Store.Redacted())
	}
	if err := PrepareDataDir(c, opts.Logger); err != nil {
		return nil, nil, err
	}
	db, err := OpenStore(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	key, err := audit.LoadOrCreateKey(c.Server.DataDir)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	// audit keeps the embedded *sql.DB until it has a PostgreSQL backend.
	log, err := audit.Open(ctx, db.DB, key, opts)
	if log == nil {
		db.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	if err != nil {
		return db, log, fmt.Errorf("audit log: %w", err)
	}
	return db, log, nil
}

// OpenStore connects to the database c names: store.url, or the SQLite
// file in the data directory.
func OpenStore(ctx context.Context, c *config.Config) (*store.DB, error) {
	return store.Connect(ctx, c.Store.Target(c.Server.DataDir, store.FileName), store.WithSync(c.Audit.Sync))
}

// PrepareDataDir creates the data directory (0700) of a validated
// configuration and, for the embedded default, writes the demo files it
// names there if they are missing: the one place anything is written
// before the database opens. log (nil: none) hears of each file written.
func PrepareDataDir(c *config.Config, log *slog.Logger) error {
	if err := c.EnsureDataDir(); err != nil {
		return err
	}
	if c.Source != config.Embedded {
		return nil
	}
	created, err := countersign.InstallDemo(c.Dir)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range created {
		log.Info("wrote demo file", "path", p)
	}
	return err
}
