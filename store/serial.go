package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// SQLite lets one connection write at a time; a second writer that finds
// the lock taken sleeps in SQLite's busy handler (1 ms, then 2, 5, ... up
// to 100 ms a try) and retries. Under load those sleeps, not the writes,
// made the latency: 200 concurrent transfers reached a p99 of seconds for
// work that takes well under a millisecond each. So this process's writes
// queue in Go instead, on one lock per opened database, and the next
// writer starts the moment the last one commits. SQLite's own lock and
// busy timeout still order writers in other processes (the CLI).

// writeLock admits one write at a time; waiting gives up after timeout,
// as SQLite's busy timeout would.
type writeLock struct {
	ch      chan struct{}
	timeout time.Duration
}

func newWriteLock(timeout time.Duration) *writeLock {
	return &writeLock{ch: make(chan struct{}, 1), timeout: timeout}
}

// errLockTimeout reads like SQLite's own SQLITE_BUSY, which it replaces.
var errLockTimeout = errors.New("database is locked (SQLITE_BUSY): another write held it past the busy timeout")

func (l *writeLock) acquire(ctx context.Context) error {
	select {
	case l.ch <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errLockTimeout
	}
}

func (l *writeLock) release() { <-l.ch }

// connector opens modernc's SQLite connections, wrapped to take the
// write lock.
type connector struct {
	dsn  string
	lock *writeLock
	drv  *sqlite.Driver
}

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	inner, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	ic, ok := inner.(innerConn)
	if !ok {
		inner.Close()
		return nil, errors.New("store: the sqlite driver's connection lacks a method database/sql needs")
	}
	return &conn{inner: ic, lock: c.lock}, nil
}

func (c *connector) Driver() driver.Driver { return c.drv }

// innerConn is what modernc's connection implements and database/sql
// uses; conn must keep offering each of them.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// conn takes the write lock for a read-write transaction, from BEGIN to
// COMMIT or ROLLBACK, and around a single statement outside a transaction
// that writes. A prepared statement run outside a transaction is not
// seen; it falls back on SQLite's busy handler.
type conn struct {
	inner innerConn
	lock  *writeLock
	inTx  bool // only the goroutine using the connection touches it
}

func (c *conn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }
func (c *conn) Close() error                              { return c.inner.Close() }
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly {
		return c.inner.BeginTx(ctx, opts)
	}
	if err := c.lock.acquire(ctx); err != nil {
		return nil, err
	}
	tx, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		c.lock.release()
		return nil, err
	}
	c.inTx = true
	return &lockedTx{inner: tx, c: c}, nil
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

// lockStatement takes the write lock for query when it writes outside a
// transaction, and returns what gives it back; nil when it took nothing.
func (c *conn) lockStatement(ctx context.Context, query string) (release func(), err error) {
	if c.inTx || !writes(query) {
		return nil, nil
	}
	if err := c.lock.acquire(ctx); err != nil {
		return nil, err
	}
	return sync.OnceFunc(c.lock.release), nil
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	release, err := c.lockStatement(ctx, query)
	if err != nil {
		return nil, err
	}
	if release != nil {
		defer release()
	}
	return c.inner.ExecContext(ctx, query, args)
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	release, err := c.lockStatement(ctx, query)
	if err != nil {
		return nil, err
	}
	if release == nil {
		return c.inner.QueryContext(ctx, query, args)
	}
	rows, err := c.inner.QueryContext(ctx, query, args)
	if err != nil {
		release()
		return nil, err
	}
	// UPDATE ... RETURNING: the write is done once the first row is read,
	// but rows may be read later; the lock is held until they are closed.
	return &lockedRows{Rows: rows, release: release}, nil
}

func (c *conn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

func (c *conn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

func (c *conn) IsValid() bool { return c.inner.IsValid() }

type lockedTx struct {
	inner driver.Tx
	c     *conn
}

func (t *lockedTx) Commit() error {
	defer t.end()
	return t.inner.Commit()
}

func (t *lockedTx) Rollback() error {
	defer t.end()
	return t.inner.Rollback()
}

func (t *lockedTx) end() {
	if t.c.inTx {
		t.c.inTx = false
		t.c.lock.release()
	}
}

type lockedRows struct {
	driver.Rows
	release func()
}

func (r *lockedRows) Close() error {
	defer r.release()
	return r.Rows.Close()
}

// writes reports whether a statement run on its own changes the
// database. It need not be exact: a write it misses waits in SQLite's busy
// handler, as every write did before.
func writes(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	i := strings.IndexAny(q, " \t\r\n(")
	if i < 0 {
		i = len(q)
	}
	switch strings.ToUpper(q[:i]) {
	case "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "UPSERT":
		return true
	}
	return false
}
