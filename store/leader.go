package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Some work must be done by one replica at a time (checkpoints, witness
// submissions, reaping, pruning): that replica leads. On PostgreSQL the
// leader of a name holds a session advisory lock keyed by the name, on a
// connection of its own; the others try to take it every leadRetry.
// When the leader's connection ends (its process died, the connection was
// cut, the server restarted) the server frees the lock and another
// replica takes it. A leader that stops running (SIGSTOP) keeps its
// connection but goes idle on it, and the server ends it after
// leadIdle, so leadership does not stay with a frozen process for ever.
//
// A leader learns it lost the lock when its connection ends, which it
// watches; but the server frees the lock before the leader's work hears
// of it, so another replica's work may start a moment before the old
// one's stops (and a frozen leader learns only when it runs again):
// leaders' work must be safe to overlap briefly (commits serialized by
// the database, not by leadership).
//
// On SQLite one process owns the data directory (serve.lock), so it
// always leads.

// LeaderApplicationName is the application_name of the connection that
// holds (or tries to take) a leadership, followed by its name after a
// space, so that an operator (or a test) can tell it in pg_stat_activity.
const LeaderApplicationName = "countersign leader"

var (
	// leadRetry is how often a replica tries to take a leadership, and
	// how often the leader checks that it still holds it.
	leadRetry = time.Second
	// leadIdle is how long the server keeps an idle leader's connection
	// (and so its lock).
	leadIdle = DefaultGrace
)

// Lead runs fn whenever this process leads name, until ctx ends, and
// returns ctx's error. fn gets a context that ends when leadership is
// lost or ctx ends, and should run until then; if it returns sooner,
// leadership is given up and taken again (by this process or another)
// after a moment.
func (db *DB) Lead(ctx context.Context, name string, fn func(ctx context.Context)) error {
	for {
		if db.dialect == PostgreSQL {
			db.leadOnce(ctx, name, fn)
		} else {
			fn(ctx)
		}
		t := time.NewTimer(leadRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// leadOnce takes name's lock if it is free and runs fn while it holds
// it. It returns at once when the lock is held elsewhere or the server
// cannot be reached.
func (db *DB) leadOnce(ctx context.Context, name string, fn func(ctx context.Context)) {
	conn, err := db.sessionConn(ctx, LeaderApplicationName+" "+name, leadIdle)
	if err != nil {
		if ctx.Err() == nil {
			db.log.Warn("store: lead: cannot connect", "name", name, "err", err)
		}
		return
	}
	defer conn.Close(context.Background())
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("leader", name)).Scan(&got); err != nil || !got {
		return
	}
	db.log.Info("store: lead: this replica leads", "name", name)
	lctx, lose := context.WithCancel(ctx)
	defer lose()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(lctx)
	}()
	err = holdWhile(lctx, conn, done)
	lose()
	<-done
	if err != nil && ctx.Err() == nil {
		db.log.Warn("store: lead: leadership lost", "name", name, "err", err)
	}
}

// holdWhile waits on conn until ctx ends or done closes, and returns
// the error that shows the connection (and so the lock) is gone. It
// waits reading the socket, so a connection the server ends is seen at
// once; every leadRetry it pings, which also keeps the session from
// going idle.
func holdWhile(ctx context.Context, conn *pgx.Conn, done <-chan struct{}) error {
	watch, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-done:
			stop()
		case <-watch.Done():
		}
	}()
	for {
		wctx, cancel := context.WithTimeout(watch, leadRetry)
		_, err := conn.WaitForNotification(wctx)
		waited := wctx.Err() != nil
		cancel()
		switch {
		case watch.Err() != nil:
			return nil
		case err == nil:
			continue // a notification nobody asked for
		case !waited || conn.IsClosed():
			return err
		}
		if err := conn.Ping(watch); err != nil {
			if watch.Err() != nil {
				return nil
			}
			return err
		}
	}
}
