package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Dialect is the engine behind a DB. The project's SQL is written once,
// with `?` placeholders; where the engines differ, a package asks the
// dialect.
type Dialect int

const (
	// SQLite is one file in the data directory (modernc.org/sqlite), the
	// default: one process writes at a time (see serial.go).
	SQLite Dialect = iota
	// PostgreSQL is a server shared by several replicas
	// (github.com/jackc/pgx/v5).
	PostgreSQL
)

func (d Dialect) String() string {
	if d == PostgreSQL {
		return "postgresql"
	}
	return "sqlite"
}

// DB is an open database of either dialect: database/sql for the
// statements, plus what the dialects do differently, transactions that
// run alone (InTx), consistent reads (Snapshot) and notifications to
// other replicas (Publish, Subscribe).
type DB struct {
	*sql.DB
	dialect Dialect
	log     *slog.Logger

	retries atomic.Uint64 // transactions re-run (after a conflict, or Retry)

	// txs are the transactions InTx runs, with what Publish queued on
	// each for after its commit.
	mu  sync.Mutex
	txs map[*sql.Tx][]note

	hub *hub
}

// Dialect says which engine db is.
func (db *DB) Dialect() Dialect { return db.dialect }

// Retries counts the transactions InTx has re-run, after a
// serialization failure or deadlock or an error marked with Retry, since
// db was opened.
func (db *DB) Retries() uint64 { return db.retries.Load() }

// WithLogger sets where a DB logs what it recovers from on its own (a
// lost notification connection). Nothing is logged without it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Connect opens the database target names: a file path or a sqlite: URL
// (sqlite:/abs/path, sqlite:rel/path) opens SQLite as Open does; a
// postgres:// or postgresql:// URL (libpq's form, as pgx parses it)
// connects to PostgreSQL, where WithSync(Normal) turns synchronous_commit
// off. Close closes it.
func Connect(ctx context.Context, target string, opts ...Option) (*DB, error) {
	o := options{sync: Full, busy: busyTimeout, lockWait: busyTimeout}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	db := &DB{log: o.log, txs: map[*sql.Tx][]note{}}
	switch {
	case strings.HasPrefix(target, "postgres://"), strings.HasPrefix(target, "postgresql://"):
		cfg, err := pgx.ParseConfig(target)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", redact(target), err)
		}
		switch o.sync {
		case Full:
		case Normal:
			cfg.RuntimeParams["synchronous_commit"] = "off"
		default:
			return nil, fmt.Errorf("store: sync %q: expected %s or %s", o.sync, Full, Normal)
		}
		db.dialect = PostgreSQL
		db.DB = sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
		db.DB.SetMaxOpenConns(conns)
		db.DB.SetMaxIdleConns(conns)
		if err := db.DB.PingContext(ctx); err != nil {
			db.DB.Close()
			return nil, fmt.Errorf("store: connect to %s: %w", redact(target), err)
		}
		db.hub = newHub(db, cfg)
	default:
		path, err := sqlitePath(target)
		if err != nil {
			return nil, err
		}
		sdb, err := Open(ctx, path, opts...)
		if err != nil {
			return nil, err
		}
		db.dialect, db.DB = SQLite, sdb
		db.hub = newHub(db, nil)
	}
	return db, nil
}

// sqlitePath is the file a path or sqlite: URL names.
func sqlitePath(target string) (string, error) {
	if !strings.HasPrefix(target, "sqlite:") {
		return target, nil
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", fmt.Errorf("store: %s: %w", target, err)
	}
	if u.RawQuery != "" || u.Host != "" {
		return "", fmt.Errorf("store: %s: a sqlite URL names a file (sqlite:/abs/path or sqlite:rel/path), no host or parameters", target)
	}
	p := u.Path
	if u.Opaque != "" {
		p = u.Opaque
	}
	if p == "" {
		return "", fmt.Errorf("store: %s: no file named", target)
	}
	return p, nil
}

// redact keeps a password out of messages.
func redact(target string) string {
	if u, err := url.Parse(target); err == nil {
		return u.Redacted()
	}
	return "the PostgreSQL URL"
}

// Close stops listening for notifications and closes the database.
func (db *DB) Close() error {
	db.hub.close()
	return db.DB.Close()
}

// InTx runs fn in a transaction that behaves as if it ran alone, and
// commits it when fn returns nil (rolls it back and returns fn's error
// otherwise).
//
// On SQLite the transaction takes the write lock at BEGIN (this
// process's queue, then BEGIN IMMEDIATE), so it does run alone. On
// PostgreSQL it runs SERIALIZABLE: when it conflicts with a concurrent
// transaction (SQLSTATE 40001) or deadlocks (40P01), at a statement or at
// COMMIT, InTx rolls it back and runs fn again after a short random
// pause (txBackoff), as it does on either dialect when fn returns an
// error marked with Retry; past txBackoff's bound the error is the
// caller's. So fn must be re-runnable: it may run more than once, and
// only its last run commits. It must compute everything it writes from
// what it reads in tx, and keep no effects outside tx (sent messages,
// counters, appended slices) until InTx returns nil. Errors fn returns
// must wrap the driver's (%w) for a conflict to be seen as one.
func (db *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	opts := &sql.TxOptions{}
	if db.dialect == PostgreSQL {
		opts.Isolation = sql.LevelSerializable
	}
	runs := 0
	return txBackoff.Do(ctx, Conflict, func() error {
		if runs++; runs > 1 {
			db.retries.Add(1)
		}
		return db.runTx(ctx, opts, fn)
	})
}

func (db *DB) runTx(ctx context.Context, opts *sql.TxOptions, fn func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	db.mu.Lock()
	db.txs[tx] = nil
	db.mu.Unlock()
	done := false
	defer func() {
		db.mu.Lock()
		notes := db.txs[tx]
		delete(db.txs, tx)
		db.mu.Unlock()
		if !done {
			tx.Rollback()
			return
		}
		if err == nil && db.dialect == SQLite {
			// PostgreSQL delivers to this process's listener too.
			db.hub.deliverLocal(notes)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	done = true
	return tx.Commit()
}

// Snapshot runs fn in a read-only transaction that sees the database as
// of one moment, whatever commits meanwhile: REPEATABLE READ READ ONLY on
// PostgreSQL; on SQLite a read transaction, whose snapshot (WAL) is
// taken at its first read. Its error is fn's.
func (db *DB) Snapshot(ctx context.Context, fn func(*sql.Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.dialect == PostgreSQL {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}
