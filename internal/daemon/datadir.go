package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// OpenAudit opens the database (the data directory's, or store.url's)
// and the audit log in it, signed with [ServerKey]. A log that
// fails its startup check comes back with its *audit.TamperError: it can
// still be read and exported, but it refuses every append.
func OpenAudit(ctx context.Context, c *config.Config, opts audit.Options) (*store.DB, *audit.Log, error) {
	if err := PrepareDataDir(c, opts.Logger); err != nil {
		return nil, nil, err
	}
	db, err := OpenStore(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	// A token key's session lives as long as the log: a Stack ends it
	// after closing the log (releaseSigner); other callers at exit.
	key, release, err := ServerSigner(c)
	if err == nil {
		if err = claimServerKey(ctx, db, key); err != nil {
			release()
		}
	}
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	log, err := auditpg.OpenSigner(ctx, db, key, opts)
	if log == nil {
		release()
		db.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	heldSigners.Store(log, release)
	if err != nil {
		return db, log, fmt.Errorf("audit log: %w", err)
	}
	return db, log, nil
}

// OpenStore connects to the database c names: store.url, or the SQLite
// file in the data directory.
// A database written by a newer version is refused (store.CheckSchema).
func OpenStore(ctx context.Context, c *config.Config) (*store.DB, error) {
	db, err := store.Connect(ctx, c.Store.Target(c.Server.DataDir, store.FileName), store.WithSync(c.Audit.Sync))
	if err != nil {
		return nil, err
	}
	if err := db.CheckSchema(ctx, Release()); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
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
