package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Amounts keep what each call that moves value moved (the amount, its
// currency and the counterparty), keyed by the tool and the SHA-256 of the
// call's canonical arguments, the args_sha256 every audit entry of the
// call carries whether or not its arguments are redacted. A start rebuilds
// the usage windows (package guard) from the audit log's entries and these
// rows, so that redacted arguments lose nothing the policy counts. A
// backchannel (CIBA) request keeps one row per action it is judged as,
// under the action's tool and a digest derived from the request's
// args_sha256 (package guard); a row with no currency is an action that
// moves nothing and counts as a call.
//
// The rows are not the log: they are not signed and are never exported, so
// a payee whose name redaction keeps out of the log is not written into it
// here (the database already holds it: the request and the ledger keep it).
//
// A row is written on a connection of its own that commits without
// syncing (synchronous=NORMAL), and is made durable by the next synced
// commit on the database, which in WAL mode syncs every frame written
// before it: the audit entry that counts the call, appended after the row
// commits. A crash can lose a row only with every entry after it, so the
// log never counts a call whose row is lost, and a value-moving call pays
// for no sync of its own.
//
// The database may end that connection (PostgreSQL's
// idle_session_timeout on a quiet replica, a restart): it is then replaced
// once and the statement run again (do).
type Amounts struct {
	db   *DB
	mu   sync.Mutex
	conn *sql.Conn
}

// Amount is one call's row.
type Amount struct {
	Tool, ArgsSHA256 string
	Amount           float64
	Currency         string
	Counterparty     string
	At               time.Time // when the call was decided (the latest, for repeated arguments)
}

const amountsSchema = `CREATE TABLE IF NOT EXISTS usage_amounts (
	tool         TEXT NOT NULL,
	args_sha256  TEXT NOT NULL,
	amount       REAL NOT NULL,
	currency     TEXT NOT NULL,
	counterparty TEXT NOT NULL,
	at           INTEGER NOT NULL, -- unix seconds
	PRIMARY KEY (tool, args_sha256)
) STRICT, WITHOUT ROWID`

// OpenAmounts creates the table if needed, once, so that the call path
// does not take the write lock for it, and takes the connection rows are
// written on. Close gives it back.
func OpenAmounts(ctx context.Context, db *DB) (*Amounts, error) {
	conn, err := dialAmounts(ctx, db)
	if err != nil {
		return nil, err
	}
	return &Amounts{db: db, conn: conn}, nil
}

// dialAmounts takes a connection from db's pool and sets it up for rows:
// the table, and commits that do not sync.
func dialAmounts(ctx context.Context, db *DB) (*sql.Conn, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: usage amounts: %w", err)
	}
	qs := []string{db.dialect.DDL(amountsSchema), "PRAGMA synchronous = NORMAL"}
	if db.dialect == PostgreSQL {
		// The same trade: the audit entry's synced commit, after the
		// row's, flushes the WAL the row is in.
		qs[1] = "SET synchronous_commit = off"
	}
	for _, q := range qs {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			conn.Close()
			return nil, fmt.Errorf("store: usage amounts: %w", err)
		}
	}
	return conn, nil
}

// do runs fn on the rows' connection. When the database has ended it, a
// new one replaces it and fn runs once more: each statement here is a
// commit or a read of its own, so running it again is safe.
func (a *Amounts) do(ctx context.Context, fn func(*sql.Conn) error) error {
	a.mu.Lock()
	conn := a.conn
	a.mu.Unlock()
	err := fn(conn)
	if !connEnded(err) {
		return err
	}
	fresh, derr := dialAmounts(ctx, a.db)
	if derr != nil {
		return errors.Join(err, derr)
	}
	a.mu.Lock()
	if a.conn == conn {
		a.conn = fresh
		conn.Close()
	} else { // another call replaced it first
		fresh.Close()
	}
	conn = a.conn
	a.mu.Unlock()
	return fn(conn)
}

// Close gives the connection back to the database's pool; again, it does
// nothing.
func (a *Amounts) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.conn.Close(); err != nil && !errors.Is(err, sql.ErrConnDone) {
		return err
	}
	return nil
}

// KeepAmount stores a call's row, replacing the row of the same tool and
// arguments (the same arguments move the same amount). It returns once the
// row is committed; the caller appends the audit entry that counts the call
// only after (see Amounts on durability).
func (a *Amounts) KeepAmount(ctx context.Context, r Amount) error {
	err := a.do(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `INSERT INTO usage_amounts (tool, args_sha256, amount, currency, counterparty, at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (tool, args_sha256) DO UPDATE SET amount = excluded.amount, currency = excluded.currency,
			counterparty = excluded.counterparty, at = CASE WHEN excluded.at > usage_amounts.at THEN excluded.at ELSE usage_amounts.at END`,
			r.Tool, r.ArgsSHA256, r.Amount, r.Currency, r.Counterparty, r.At.Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: keep usage amount: %w", err)
	}
	return nil
}

// AmountsSince returns the rows of calls decided at or after since, by
// tool and args_sha256 (Key).
func (a *Amounts) AmountsSince(ctx context.Context, since time.Time) (map[string]Amount, error) {
	var out map[string]Amount
	err := a.do(ctx, func(conn *sql.Conn) error {
		rows, err := conn.QueryContext(ctx, `SELECT tool, args_sha256, amount, currency, counterparty, at
			FROM usage_amounts WHERE at >= ?`, since.Unix())
		if err != nil {
			return err
		}
		defer rows.Close()
		out = map[string]Amount{}
		for rows.Next() {
			var r Amount
			var at int64
			if err := rows.Scan(&r.Tool, &r.ArgsSHA256, &r.Amount, &r.Currency, &r.Counterparty, &at); err != nil {
				return err
			}
			r.At = time.Unix(at, 0)
			out[AmountKey(r.Tool, r.ArgsSHA256)] = r
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: usage amounts: %w", err)
	}
	return out, nil
}

// ForgetAmounts deletes the rows of calls decided before before.
func (a *Amounts) ForgetAmounts(ctx context.Context, before time.Time) error {
	err := a.do(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `DELETE FROM usage_amounts WHERE at < ?`, before.Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: forget usage amounts: %w", err)
	}
	return nil
}

// connEnded reports whether err says the connection is gone: ended by the
// server (SQLSTATE class 57P: an administrator, a shutdown,
// idle_session_timeout) or found broken by database/sql.
func connEnded(err error) bool {
	var pg *pgconn.PgError
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.As(err, &pg) && strings.HasPrefix(pg.Code, "57P")
}

// AmountKey is the key of AmountsSince's map. args_sha256 is hex, so a
// space cannot be part of it, and the key stays text PostgreSQL takes
// (it refuses U+0000).
func AmountKey(tool, argsSHA256 string) string { return tool + " " + argsSHA256 }
