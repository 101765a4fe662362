package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// UsageWindows keep per-minute sums of calls and amounts by key in the
// database, so that replicas sharing it judge a call against what all of
// them counted: with each replica's windows in its own memory, N replicas
// would let through N times a limit. Package guard says what the keys
// and windows mean; here a key is bytes (guard's keys hold U+0000, which
// PostgreSQL text refuses, so the column is BYTEA/BLOB).
//
// Decide is one transaction: it locks the keys the decision depends on,
// reads every window in one query, lets the caller decide, and adds what
// the caller counts. On PostgreSQL the locks are transaction-scoped
// advisory locks (pg_advisory_xact_lock), taken in one fixed order so two
// deciders never wait on each other in a cycle, and the transaction is
// READ COMMITTED: each statement after the locks sees what the previous
// holder committed, where a SERIALIZABLE snapshot taken before the wait
// would not (and would fail with 40001 instead). On SQLite the
// transaction holds the database's write lock from its start, which
// serializes every decider.
//
// Amounts are NUMERIC on PostgreSQL, so additions and the subtractions
// of Release cancel exactly; they are sent and summed as decimals. SQLite
// has no exact type: REAL, as the in-memory windows' float64.
type UsageWindows struct{ db *DB }

// UsageWindow asks for one key's sums over the minutes from Since on.
type UsageWindow struct {
	Key   []byte
	Since int64 // minute (unix seconds / 60)
}

// UsageSum is a window's sums.
type UsageSum struct{ Calls, Amount float64 }

// UsageAdd counts Calls and Amount in Key's Minute (negative to give
// them back). The adds of one Decide or Add name each key and minute
// once.
type UsageAdd struct {
	Key    []byte
	Minute int64
	Calls  int64
	Amount float64
}

func usageSchema(d Dialect) string {
	if d == PostgreSQL {
		return `CREATE TABLE IF NOT EXISTS usage_minutes (
	key    BYTEA NOT NULL,
	minute BIGINT NOT NULL, -- unix seconds / 60
	calls  BIGINT NOT NULL,
	amount NUMERIC NOT NULL,
	PRIMARY KEY (key, minute))`
	}
	return `CREATE TABLE IF NOT EXISTS usage_minutes (
	key    BLOB NOT NULL,
	minute INTEGER NOT NULL, -- unix seconds / 60
	calls  INTEGER NOT NULL,
	amount REAL NOT NULL,
	PRIMARY KEY (key, minute)
) STRICT, WITHOUT ROWID`
}

// usageReleasedSchema names the calls whose share ReleaseOnce gave back,
// with the minute they counted in, so that it is given back once however
// many replicas hold it.
func usageReleasedSchema(d Dialect) []string {
	if d == PostgreSQL {
		return []string{`CREATE TABLE IF NOT EXISTS usage_released (
	id     TEXT PRIMARY KEY,
	minute BIGINT NOT NULL)`, `CREATE INDEX IF NOT EXISTS usage_released_minute ON usage_released (minute)`}
	}
	return []string{`CREATE TABLE IF NOT EXISTS usage_released (
	id     TEXT PRIMARY KEY,
	minute INTEGER NOT NULL
) STRICT, WITHOUT ROWID`, `CREATE INDEX IF NOT EXISTS usage_released_minute ON usage_released (minute)`}
}

// OpenUsageWindows creates the tables if needed.
func OpenUsageWindows(ctx context.Context, db *DB) (*UsageWindows, error) {
	for _, q := range append([]string{usageSchema(db.Dialect())}, usageReleasedSchema(db.Dialect())...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("store: usage windows: %w", err)
		}
	}
	return &UsageWindows{db: db}, nil
}

// Decide locks the keys in lock, reads windows, and calls decide with
// their sums (in the order of windows); what decide returns is added,
// and rows of those keys older than horizon are dropped, in the same
// transaction. An error from decide rolls everything back and is
// returned. Calls deciding on any of the same keys wait for each other.
func (u *UsageWindows) Decide(ctx context.Context, lock [][]byte, windows []UsageWindow, horizon int64,
	decide func([]UsageSum) ([]UsageAdd, error)) error {
	// Default options: READ COMMITTED on PostgreSQL; on SQLite this
	// process's write queue, then BEGIN IMMEDIATE (serial.go).
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: usage windows: %w", err)
	}
	defer tx.Rollback()
	if u.db.Dialect() == PostgreSQL {
		// One statement; its target list is evaluated left to right, so
		// the locks are taken in ids' order. The commit need not wait
		// for the disk (SET LOCAL synchronous_commit = off): what counts
		// a call is the audit entry appended after it (call.allowed,
		// approval.requested), and that synchronous commit flushes the
		// write-ahead log up to it, this row's commit included. A crash
		// loses the row only with the entry, that is, for a call that
		// never ran.
		calls := []string{"set_config('synchronous_commit', 'off', true)"}
		var args []any
		for _, id := range lockIDs(lock) {
			calls, args = append(calls, "pg_advisory_xact_lock(?)"), append(args, id)
		}
		if _, err := tx.ExecContext(ctx, "SELECT "+strings.Join(calls, ", "), args...); err != nil {
			return fmt.Errorf("store: usage windows: lock: %w", err)
		}
	}
	sums, err := readWindows(ctx, tx, windows)
	if err != nil {
		return err
	}
	adds, err := decide(sums)
	if err != nil {
		return err
	}
	if u.db.Dialect() == PostgreSQL {
		// One round trip less under the locks: the upsert and the
		// forgetting in one statement.
		err = addAndForget(ctx, tx, adds, horizon)
	} else if err = addUsage(ctx, tx, adds); err == nil {
		err = forget(ctx, tx, adds, horizon)
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: usage windows: commit: %w", err)
	}
	return nil
}

// Add adds adds without deciding anything: Release gives a call's share
// back with negative adds. It takes no lock: each row's update is atomic,
// and a decider that reads just before it sees a little more usage than
// there is, never less.
func (u *UsageWindows) Add(ctx context.Context, adds []UsageAdd) error {
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: usage windows: %w", err)
	}
	defer tx.Rollback()
	if err := addUsage(ctx, tx, adds); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: usage windows: commit: %w", err)
	}
	return nil
}

// ReleaseOnce gives back a call's share (adds, negative) unless call id's
// share was given back before, by any replica, and reports whether it
// did. More than one replica may hold the same call's share: the one that
// counted it and, once that one is taken for dead, the replica that
// rebuilt it from the call's request or entry (package guard); without
// this, both would give it back and the windows would count less than
// was moved.
//
// A rebuilt share knows its minute only roughly: the call counted in a
// minute from since to an add's Minute. Each add is taken from the
// earliest minute in that span whose row holds all of it, so that no row
// goes below zero and the give-back leaves every window no later than
// the count it cancels (a window counts more meanwhile, never less). An
// add no row holds (the count is gone already) is not given back.
//
// The mark is kept with the call's last minute and forgotten once that
// falls before horizon: a share that old counts in no window, and guard
// gives none back.
func (u *UsageWindows) ReleaseOnce(ctx context.Context, id string, since int64, adds []UsageAdd, horizon int64) (bool, error) {
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store: usage windows: %w", err)
	}
	defer tx.Rollback()
	last := since
	for _, a := range adds {
		last = max(last, a.Minute)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO usage_released (id, minute) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, last)
	if err != nil {
		return false, fmt.Errorf("store: usage windows: release %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: usage windows: release %s: %w", id, err)
	}
	if n == 0 {
		return false, nil // given back already
	}
	for _, a := range adds {
		calls, amount := -a.Calls, strconv.FormatFloat(-a.Amount, 'f', -1, 64)
		// The outer conditions hold the row to them again if another
		// release changed it after the minute was chosen.
		_, err := tx.ExecContext(ctx, `UPDATE usage_minutes SET calls = calls - ?, amount = amount - CAST(? AS NUMERIC)
			WHERE key = ? AND calls >= ? AND amount >= CAST(? AS NUMERIC) AND minute = (
				SELECT MIN(minute) FROM usage_minutes
				WHERE key = ? AND minute >= ? AND minute <= ? AND calls >= ? AND amount >= CAST(? AS NUMERIC))`,
			calls, amount, a.Key, calls, amount, a.Key, since, a.Minute, calls, amount)
		if err != nil {
			return false, fmt.Errorf("store: usage windows: release %s: %w", id, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM usage_released WHERE minute < ?`, horizon); err != nil {
		return false, fmt.Errorf("store: usage windows: forget releases: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: usage windows: commit: %w", err)
	}
	return true, nil
}

// lockIDs maps keys to advisory lock ids (advisoryKey in the usage
// space), sorted and without repeats, so every decider takes its locks in
// the same order. Two keys sharing an id only wait for each other.
func lockIDs(keys [][]byte) []int64 {
	ids := make([]int64, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, advisoryKey("usage", string(k)))
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// readWindows sums every window in one statement.
func readWindows(ctx context.Context, tx *sql.Tx, windows []UsageWindow) ([]UsageSum, error) {
	if len(windows) == 0 {
		return nil, nil
	}
	var cols []string
	var args []any
	for _, w := range windows {
		cols = append(cols,
			"COALESCE(SUM(CASE WHEN key = ? AND minute >= ? THEN calls ELSE 0 END), 0)",
			"COALESCE(SUM(CASE WHEN key = ? AND minute >= ? THEN amount ELSE 0 END), 0)")
		args = append(args, w.Key, w.Since, w.Key, w.Since)
	}
	first := windows[0].Since
	var in []string
	var keys [][]byte
	for _, w := range windows {
		first = min(first, w.Since)
		if !slices.ContainsFunc(keys, func(k []byte) bool { return string(k) == string(w.Key) }) {
			keys = append(keys, w.Key)
			in = append(in, "?")
		}
	}
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, first)
	q := "SELECT " + strings.Join(cols, ", ") + " FROM usage_minutes WHERE key IN (" + strings.Join(in, ", ") + ") AND minute >= ?"
	out := make([]UsageSum, len(windows))
	dest := make([]any, 0, 2*len(windows))
	for i := range out {
		dest = append(dest, &out[i].Calls, &out[i].Amount)
	}
	if err := tx.QueryRowContext(ctx, q, args...).Scan(dest...); err != nil {
		return nil, fmt.Errorf("store: usage windows: read: %w", err)
	}
	return out, nil
}

// addAndForget is addUsage and forget in one PostgreSQL statement. The
// rows it forgets are older than every minute it adds, so no row is both
// deleted and upserted (which one statement cannot do).
func addAndForget(ctx context.Context, tx *sql.Tx, adds []UsageAdd, horizon int64) error {
	if len(adds) == 0 {
		return nil
	}
	var in []string
	var args []any
	for _, a := range adds {
		in = append(in, "?")
		args = append(args, a.Key)
		horizon = min(horizon, a.Minute)
	}
	args = append(args, horizon)
	upsert, upsertArgs := usageUpsert(adds)
	_, err := tx.ExecContext(ctx, "WITH forgotten AS (DELETE FROM usage_minutes WHERE key IN ("+strings.Join(in, ", ")+") AND minute < ?) "+upsert,
		append(args, upsertArgs...)...)
	if err != nil {
		return fmt.Errorf("store: usage windows: add: %w", err)
	}
	return nil
}

// addUsage upserts adds in one statement. A call's keys differ from each
// other, so no row is named twice (which PostgreSQL refuses).
func addUsage(ctx context.Context, tx *sql.Tx, adds []UsageAdd) error {
	if len(adds) == 0 {
		return nil
	}
	q, args := usageUpsert(adds)
	_, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: usage windows: add: %w", err)
	}
	return nil
}

// usageUpsert is the statement that adds adds, and its arguments.
func usageUpsert(adds []UsageAdd) (string, []any) {
	rows := make([]string, len(adds))
	args := make([]any, 0, 4*len(adds))
	for i, a := range adds {
		// The amount goes as its shortest decimal, which NUMERIC keeps
		// exactly (a float64 parameter could be sent rounded).
		rows[i] = "(?, ?, ?, CAST(? AS NUMERIC))"
		args = append(args, a.Key, a.Minute, a.Calls, strconv.FormatFloat(a.Amount, 'f', -1, 64))
	}
	return `INSERT INTO usage_minutes (key, minute, calls, amount) VALUES ` + strings.Join(rows, ", ") + `
		ON CONFLICT (key, minute) DO UPDATE SET calls = usage_minutes.calls + excluded.calls,
			amount = usage_minutes.amount + excluded.amount`, args
}

// forget drops the rows of the keys just written that fell out of every
// window, so the table grows with keys and minutes of the horizon only.
func forget(ctx context.Context, tx *sql.Tx, adds []UsageAdd, horizon int64) error {
	if len(adds) == 0 {
		return nil
	}
	var in []string
	var args []any
	for _, a := range adds {
		in = append(in, "?")
		args = append(args, a.Key)
	}
	args = append(args, horizon)
	if _, err := tx.ExecContext(ctx, "DELETE FROM usage_minutes WHERE key IN ("+strings.Join(in, ", ")+") AND minute < ?", args...); err != nil {
		return fmt.Errorf("store: usage windows: forget: %w", err)
	}
	return nil
}
