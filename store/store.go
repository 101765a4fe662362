// Package store opens Countersign's SQLite database: one file in the data
// directory holding the ledger, approvers, credentials, approval requests and
// the audit log. Each package owns its own tables and creates them itself.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// FileName is the database file inside the data directory.
const FileName = "countersign.db"

// Durability of a commit: Full (the default) syncs every commit to disk,
// so it survives a power loss; Normal syncs only at WAL checkpoints, so a
// commit survives the process being killed but the last ones may be lost
// with the machine (the trade Vault's file audit device makes).
const (
	Full   = "full"
	Normal = "normal"
)

// Option adjusts how Open opens the database.
type Option func(*options)

type options struct{ sync string }

// WithSync sets the durability of commits: Full or Normal.
func WithSync(mode string) Option { return func(o *options) { o.sync = mode } }

// Open opens (creating if needed) the database at path in WAL mode with a
// busy timeout, so readers never block the writer and a second writer waits
// instead of failing. Foreign keys are enforced. Commits are synced to disk
// (Full) unless WithSync says Normal.
func Open(ctx context.Context, path string, opts ...Option) (*sql.DB, error) {
	o := options{sync: Full}
	for _, f := range opts {
		f(&o)
	}
	sync := "FULL"
	switch o.sync {
	case Full:
	case Normal:
		sync = "NORMAL"
	default:
		return nil, fmt.Errorf("store: sync %q: expected %s or %s", o.sync, Full, Normal)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	q := url.Values{}
	for _, p := range []string{
		"journal_mode(WAL)",
		"busy_timeout(10000)",
		"foreign_keys(ON)",
		"synchronous(" + sync + ")",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return db, nil
}
