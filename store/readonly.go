package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"os"

	"modernc.org/sqlite"
)

// OpenReadOnly opens the SQLite database at path for reading only: it
// works on a copy of a data directory nobody may change (a read-only
// mount, an immutable directory, chmod a-w), as an auditor keeps one,
// and changes nothing in the database.
//
// SQLite reads a database in WAL mode through its -shm file. Where there
// is one (a running server's, or one copied with the database) it is
// read through it (mode=ro), so the commits in the -wal are seen. A copy
// with neither (a server stopped cleanly, a backup) or with an empty
// -wal has nothing outside the file: it is opened as immutable, and
// nothing is written beside it. A -wal holding commits without its -shm
// needs one made beside it; where that cannot be done the commits would
// be missed, so the copy is refused, saying why.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	_, err := os.Stat(path + "-shm")
	shm := err == nil
	wal, err := os.Stat(path + "-wal")
	walCommits := err == nil && wal.Size() > 0
	if !shm && !walCommits {
		q.Set("immutable", "1")
	}
	sdb := sql.OpenDB(&connector{dsn: "file:" + path + "?" + q.Encode(), lock: newWriteLock(busyTimeout), drv: &sqlite.Driver{}})
	sdb.SetMaxOpenConns(conns)
	sdb.SetMaxIdleConns(conns)
	// A connection opens the file at its first statement, not at Ping.
	var n int
	if err := sdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema`).Scan(&n); err != nil {
		sdb.Close()
		if walCommits && !shm {
			return nil, fmt.Errorf("store: read %s: its write-ahead log (%s-wal) holds commits, and SQLite reads them only through "+
				"its -shm file, which is missing and cannot be made here (%v): copy the -shm with the database, "+
				"or read a backup (countersign backup), which is one file", path, path, err)
		}
		return nil, fmt.Errorf("store: read %s: %w", path, err)
	}
	db := &DB{DB: sdb, dialect: SQLite, log: slog.New(slog.DiscardHandler), txs: map[*sql.Tx][]note{}}
	db.hub = newHub(db, nil)
	return db, nil
}
