package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// On PostgreSQL the replicas share no directory, so an owner is a row of
// the replicas table plus a session advisory lock keyed by its id, held
// on a connection of its own for as long as the process lives. The
// server drops the lock when that connection ends, however the process
// died; the holder also stamps its row's seen_at every Heartbeat.
//
// The lock alone cannot tell death: a PostgreSQL restart drops every
// replica's lock at once, and a replica then needs a moment to take it
// again. So an owner is dead only when its lock is free AND its row has
// not been stamped for a Grace, on a server up for at least a Grace
// (after a longer outage every row is stale until its replica is back).
// A replica that is merely paused (SIGSTOP, a frozen VM), or whose host
// vanished, keeps its connection as far as the server knows, but the
// connection is idle: the server ends it after the Grace
// (idle_session_timeout), which frees the lock, so a pause long enough
// to look dead is treated as death.
//
// Whoever finds an owner dead fences it (fenced = true) before saying so,
// and acts for it only after. A write made for an owner first takes a
// share lock on its row (Unfenced), so it either commits before the fence
// lands or sees it and commits nothing: a paused replica that wakes after
// others took over its work cannot finish its own copy of it. The holder
// learns of the fence at its next heartbeat, or when its lock connection
// is gone and its row is found fenced, and calls OnFenced: the process
// must stop. A lock connection lost while the row is not fenced (the
// server restarted) is taken again and the holder goes on.

// Defaults of OwnerOptions.
const (
	DefaultHeartbeat = 2 * time.Second
	DefaultGrace     = 10 * time.Second
)

// OwnerApplicationName is the application_name of the connection that
// holds an owner's lock, so that an operator (or a test) can tell it in
// pg_stat_activity; the owner's id follows it after a space.
const OwnerApplicationName = "countersign owner"

// ErrFenced is returned for a write made for an owner that was told
// dead: another process acts for it now, and what it writes must not
// commit.
var ErrFenced = errors.New("store: this owner was fenced: another replica found it dead and acts for it")

// OwnerOptions adjusts the owners of a PostgreSQL database; on SQLite
// they change nothing.
type OwnerOptions struct {
	// Heartbeat is how often a holder stamps its row (DefaultHeartbeat).
	Heartbeat time.Duration
	// Grace is how long an owner whose lock is free must have gone
	// unstamped to be dead (DefaultGrace). It must be several
	// Heartbeats, and longer than a PostgreSQL restart.
	Grace time.Duration
	// OnFenced is called, once, when an owner this process holds learns
	// that it was fenced; the process should exit. Nil: it is logged.
	OnFenced func(id string)
	// Logger hears what a holder recovers from on its own (a lost lock
	// connection). Nil: nothing is logged.
	Logger *slog.Logger
}

// OwnersFor returns the owners of db: on SQLite, lock files beside its
// file (as OwnersOf); on PostgreSQL, the replicas table, which it
// creates if it does not exist yet.
func OwnersFor(ctx context.Context, db *DB, opts OwnerOptions) (*Owners, error) {
	if db.dialect != PostgreSQL {
		return OwnersOf(ctx, db), nil
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Grace < 2*opts.Heartbeat {
		return nil, fmt.Errorf("store: owners: grace %v is less than two heartbeats (%v)", opts.Grace, opts.Heartbeat)
	}
	if opts.Logger == nil {
		opts.Logger = db.log
	}
	// Written in PostgreSQL's words: CreateTables leaves them as they are,
	// and creates the table once however many replicas start at once.
	if err := db.CreateTables(ctx, replicasDDL); err != nil {
		return nil, fmt.Errorf("store: create the replicas table: %w", err)
	}
	return &Owners{pg: &pgOwners{db: db, opts: opts}}, nil
}

// replicasDDL is the replicas table: one row per process that holds an
// owner id. host and pid say where it ran, for an operator.
const replicasDDL = `CREATE TABLE IF NOT EXISTS replicas (
	id         TEXT PRIMARY KEY,
	started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
	fenced     BOOLEAN NOT NULL DEFAULT false,
	host       TEXT,
	pid        INT
)`

// advisoryKey is the 64-bit advisory lock key of name in space (owner,
// leader, usage): the first bytes of a hash, so that no two names of
// the project meet by accident.
func advisoryKey(space, name string) int64 {
	h := sha256.Sum256([]byte("countersign " + space + "\x00" + name))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// sessionConn opens a connection of its own, outside the pool, for a
// session lock that lives as long as it. appName names it in
// pg_stat_activity. With idle > 0 the server ends it after that long
// without a statement, so a process that stopped running loses its locks.
func (db *DB) sessionConn(ctx context.Context, appName string, idle time.Duration) (*pgx.Conn, error) {
	cfg := db.hub.cfg.Copy()
	cfg.RuntimeParams["application_name"] = appName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if idle > 0 {
		_, err := conn.Exec(ctx, fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds()))
		var pg *pgconn.PgError
		if err != nil && !(errors.As(err, &pg) && pg.Code == "42704") { // before PostgreSQL 14: no such setting
			conn.Close(context.Background())
			return nil, err
		}
	}
	return conn, nil
}

// pgOwners is Owners on PostgreSQL.
type pgOwners struct {
	db   *DB
	opts OwnerOptions

	alsoMu sync.Mutex
	also   []ForgetCheck // AlsoForget's, run by forget after settled
}

// setupTimeout bounds Hold's and Dead's statements, which take no
// context from their callers.
const setupTimeout = 30 * time.Second

func (o *pgOwners) hold(id string) (release func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	host, _ := os.Hostname()
	if _, err := o.db.ExecContext(ctx, `INSERT INTO replicas (id, host, pid) VALUES (?, ?, ?)`, id, host, os.Getpid()); err != nil {
		return nil, fmt.Errorf("store: hold owner %s: %w", id, err)
	}
	h := &holder{o: o, id: id, stop: make(chan struct{}), done: make(chan struct{})}
	if err := h.lock(ctx); err != nil {
		o.db.ExecContext(ctx, `DELETE FROM replicas WHERE id = ?`, id)
		return nil, fmt.Errorf("store: hold owner %s: %w", id, err)
	}
	go h.run()
	var once sync.Once
	return func() { once.Do(h.release) }, nil
}

// holder keeps one owner's lock and row alive.
type holder struct {
	o    *pgOwners
	id   string
	conn *pgx.Conn // nil while lost; only run touches it after Hold
	stop chan struct{}
	done chan struct{}
}

// lock opens the lock connection and takes the owner's lock on it.
func (h *holder) lock(ctx context.Context) error {
	conn, err := h.o.db.sessionConn(ctx, OwnerApplicationName+" "+h.id, h.o.opts.Grace)
	if err != nil {
		return err
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("owner", h.id)).Scan(&got); err != nil {
		conn.Close(context.Background())
		return err
	}
	if !got {
		conn.Close(context.Background())
		return errors.New("its lock is held by another session")
	}
	h.conn = conn
	return nil
}

// run stamps the row every heartbeat until released or fenced, taking
// the lock again whenever its connection is lost.
func (h *holder) run() {
	defer close(h.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		if h.conn != nil {
			h.conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(h.o.opts.Heartbeat)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if h.conn == nil {
			if err := h.lock(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				h.o.opts.Logger.Warn("store: owner: cannot take the liveness lock again yet", "owner", h.id, "err", err)
				if h.fencedNow(ctx) {
					return
				}
				continue
			}
			h.o.opts.Logger.Info("store: owner: liveness lock taken again", "owner", h.id, "after_failures", failures)
			failures = 0
		}
		tag, err := h.conn.Exec(ctx, `UPDATE replicas SET seen_at = now() WHERE id = $1 AND NOT fenced`, h.id)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// The connection is gone, or broken: its lock with it.
			h.o.opts.Logger.Warn("store: owner: liveness lock connection lost; taking it again", "owner", h.id, "err", err)
			h.conn.Close(context.Background())
			h.conn = nil
			if h.fencedNow(ctx) {
				return
			}
		case tag.RowsAffected() == 0:
			h.fenced()
			return
		}
	}
}

// fencedNow reports whether the owner's row says it was fenced (or is
// gone), read through the pool, and tells OnFenced if so. A read that
// fails (the server is down) says no: the holder retries.
func (h *holder) fencedNow(ctx context.Context) bool {
	var fenced bool
	err := h.o.db.QueryRowContext(ctx, `SELECT fenced FROM replicas WHERE id = ?`, h.id).Scan(&fenced)
	if errors.Is(err, sql.ErrNoRows) || err == nil && fenced {
		h.fenced()
		return true
	}
	return false
}

func (h *holder) fenced() {
	h.o.opts.Logger.Error("store: owner: fenced: another replica found this one dead and acts for it", "owner", h.id)
	if h.o.opts.OnFenced != nil {
		h.o.opts.OnFenced(h.id)
	}
}

// release stops the heartbeat, removes the row and then drops the lock,
// so that nobody finds the lock free while the row still says alive.
func (h *holder) release() {
	close(h.stop)
	<-h.done
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := h.o.db.ExecContext(ctx, `DELETE FROM replicas WHERE id = ? AND NOT fenced`, h.id); err != nil {
		h.o.opts.Logger.Warn("store: owner: remove this replica's row", "owner", h.id, "err", err)
	}
}

// dead reports whether owner id is dead, fencing it first: it is dead
// when fenced already, or when its lock is free and its row was last
// stamped more than a grace ago. The lock is held while the fence is
// set, so the owner cannot take it back in between. Any failure says
// alive: nobody acts for an owner that may live.
func (o *pgOwners) dead(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	dead, err := o.fenceIfDead(ctx, id)
	if err != nil {
		o.opts.Logger.Warn("store: owner: cannot tell whether it is dead; taken as alive", "owner", id, "err", err)
	}
	return dead
}

// staleRow holds for a row not stamped for a grace (the first
// parameter, in seconds) on a server that has been up at least that long
// (the second): after an outage longer than the grace every row is
// stale, and the replicas need a heartbeat's time to come back.
const staleRow = `(seen_at < now() - make_interval(secs => ?) AND pg_postmaster_start_time() < now() - make_interval(secs => ?))`

func (o *pgOwners) fenceIfDead(ctx context.Context, id string) (bool, error) {
	var fenced, stale bool
	err := o.db.QueryRowContext(ctx, `SELECT fenced, `+staleRow+` FROM replicas WHERE id = ?`,
		o.opts.Grace.Seconds(), o.opts.Grace.Seconds(), id).Scan(&fenced, &stale)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil // never seen, or released: nobody can tell
	case err != nil:
		return false, err
	case fenced:
		return true, nil
	case !stale:
		return false, nil
	}
	conn, err := o.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	key := advisoryKey("owner", id)
	var free bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(?)`, key).Scan(&free); err != nil {
		return false, err
	}
	if !free {
		return false, nil
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(?)`, key)
	res, err := conn.ExecContext(ctx, `UPDATE replicas SET fenced = true WHERE id = ? AND (fenced OR `+staleRow+`)`,
		id, o.opts.Grace.Seconds(), o.opts.Grace.Seconds())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (o *pgOwners) fence(ctx context.Context, id string) error {
	if _, err := o.db.ExecContext(ctx, `UPDATE replicas SET fenced = true WHERE id = ?`, id); err != nil {
		return fmt.Errorf("store: fence owner %s: %w", id, err)
	}
	return nil
}

func (o *pgOwners) listed() []string {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	rows, err := o.db.QueryContext(ctx, `SELECT id FROM replicas ORDER BY id`)
	if err != nil {
		o.opts.Logger.Warn("store: owners: list", "err", err)
		return nil
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (o *pgOwners) unfenced(ctx context.Context, tx *sql.Tx, id string) error {
	var fenced bool
	err := tx.QueryRowContext(ctx, `SELECT fenced FROM replicas WHERE id = ? FOR SHARE`, id).Scan(&fenced)
	switch {
	case errors.Is(err, sql.ErrNoRows), err == nil && fenced:
		return fmt.Errorf("owner %s: %w", id, ErrFenced)
	case err != nil:
		return fmt.Errorf("store: check owner %s is not fenced: %w", id, err)
	}
	return nil
}

func (o *pgOwners) forget(ctx context.Context, id string, settled func(ctx context.Context, tx *sql.Tx) (bool, error)) (bool, error) {
	var gone bool
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		gone = false
		var fenced bool
		err := tx.QueryRowContext(ctx, `SELECT fenced FROM replicas WHERE id = ? FOR UPDATE`, id).Scan(&fenced)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !fenced {
			return nil
		}
		if err != nil {
			return err
		}
		if ok, err := settled(ctx, tx); err != nil || !ok {
			return err
		}
		o.alsoMu.Lock()
		also := o.also
		o.alsoMu.Unlock()
		for _, check := range also {
			if ok, err := check(ctx, tx, id); err != nil || !ok {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM replicas WHERE id = ? AND fenced`, id)
		gone = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: forget owner %s: %w", id, err)
	}
	return gone, nil
}
