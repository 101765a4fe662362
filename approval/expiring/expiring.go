// Package expiring decides when a pending approval request is announced to
// its approvers as expiring, and makes that announcement once: across a
// restart, and across every process sharing the database.
package expiring

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// Event is the announcement's name (approval.EventExpiring), and its key in
// the table of announcements made.
const Event = "expiring"

// Lead is how long before its expiry a pending request is announced as
// expiring: a fifth of its lifetime, at most a minute. The expiry loop
// looks at least once a second, so the announcement may come up to a
// second late; a request decided or ended before then is not announced.
func Lead(lifetime time.Duration) time.Duration { return min(lifetime/5, time.Minute) }

// Schema records which once-only announcements were made, so that two
// processes sharing the database, or one restarted, do not repeat them.
const Schema = `CREATE TABLE IF NOT EXISTS approval_notified (
	request_id TEXT NOT NULL,
	event TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (request_id, event)
)`

// DB is what Due and Claim need of the database.
type DB interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Due returns the pending requests that have entered their Lead and were
// not announced yet, and how long until the next one does (at most an
// hour).
func Due(ctx context.Context, db DB, now time.Time) (ids []string, next time.Duration, err error) {
	next = time.Hour
	rows, err := db.QueryContext(ctx, `SELECT id, created_at, expires_at FROM approval_requests r
		WHERE state = 'pending' AND expires_at > ? AND expires_at <= ?
		  AND NOT EXISTS (SELECT 1 FROM approval_notified n WHERE n.request_id = r.id AND n.event = ?)`,
		now.Unix(), now.Add(time.Minute).Unix(), Event)
	if err != nil {
		return nil, next, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var created, expires int64
		if rows.Scan(&id, &created, &expires) != nil {
			continue
		}
		exp := time.Unix(expires, 0)
		if until := exp.Sub(now) - Lead(exp.Sub(time.Unix(0, created))); until <= 0 {
			ids = append(ids, id)
		} else {
			next = min(next, until)
		}
	}
	return ids, next, rows.Err()
}

// Claim records that request id is announced as expiring. It reports
// false when another process (or an earlier run) already did.
func Claim(ctx context.Context, db DB, id string, now time.Time) (bool, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO approval_notified (request_id, event, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING`,
		id, Event, now.UnixNano())
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Announce calls announce for each pending request that has entered its
// Lead and that this call is the first to claim, and says how long until
// the next one enters its lead: the expiry loop sleeps no longer. Its
// error is the first claim it could not record; the rest wait for the
// next round.
func Announce(ctx context.Context, db DB, now time.Time, log *slog.Logger, announce func(id string)) (time.Duration, error) {
	due, next, err := Due(ctx, db, now)
	if err != nil {
		log.Warn("approval: looking for expiring requests", "err", err)
	}
	for _, id := range due {
		if first, err := Claim(ctx, db, id, now); err != nil {
			return next, fmt.Errorf("claim the expiring announcement of %s: %w", id, err)
		} else if first { // else another process announced it
			announce(id)
		}
	}
	return next, nil
}
