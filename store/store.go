// Package store is Countersign's data directory: it opens the SQLite
// database, one file in the directory holding the ledger, approvers,
// credentials, approval requests and the audit log. Each package owns its
// own tables and creates them itself.
// Beside it, the package keeps what belongs to the data directory as a
// whole: the lock that lets one serve at a time use it (lock.go), and the
// amounts the usage windows are rebuilt from (amounts.go).
//
// Connect (db.go) opens either SQLite or, for a postgres:// URL, a
// PostgreSQL server that several replicas share, behind one DB: the same
// SQL with `?` placeholders (placeholders.go), transactions that run as
// if alone (InTx), consistent reads (Snapshot) and notifications between
// replicas (notify.go). Open stays SQLite's, for today's callers.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"

	"time"

	"modernc.org/sqlite" // pure Go, no cgo
)

const (
	// busyTimeout is how long a write waits for another to finish.
	busyTimeout = 10 * time.Second
	conns       = 16
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

type options struct {
	sync string
	// busy is SQLite's own wait for another connection's write lock;
	// lockWait is this process's wait for one of its own writes.
	busy, lockWait time.Duration
	log            *slog.Logger // Connect's; Open logs nothing
}

// WithSync sets the durability of commits: Full or Normal.
func WithSync(mode string) Option { return func(o *options) { o.sync = mode } }

// Open opens (creating if needed) the database at path in WAL mode with a
// busy timeout, so readers never block the writer and a second writer waits
// instead of failing. Foreign keys are enforced. Commits are synced to disk
// (Full) unless WithSync says Normal.
func Open(ctx context.Context, path string, opts ...Option) (*sql.DB, error) {
	o := options{sync: Full, busy: busyTimeout, lockWait: busyTimeout}
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
		fmt.Sprintf("busy_timeout(%d)", o.busy.Milliseconds()),
		"foreign_keys(ON)",
		"synchronous(" + sync + ")",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db := sql.OpenDB(&connector{dsn: "file:" + path + "?" + q.Encode(), lock: newWriteLock(o.lockWait), drv: &sqlite.Driver{}})
	// Each connection keeps its own page cache outside Go's heap: 10,000
	// calls at once opened thousands and held a gigabyte. Writes go one
	// at a time anyway and reads are short, so a few suffice; and they
	// stay open, since database/sql keeps two idle by default and a burst
	// then opened and closed one per query, re-running the pragmas (a
	// sixth of the CPU of a run of transfers). The whole suite passes
	// with a single connection: nothing holds one while it waits for
	// another.
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
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
