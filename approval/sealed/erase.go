package sealed

import (
	"context"
	"time"

	"github.com/countersign/countersign/store"
)

// Erase erases from approval_requests every stored result whose
// collection window has ended as of now, and any result not sealed (left
// by an older version), and returns how many.
func Erase(ctx context.Context, db *store.DB, now time.Time) (int, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, substr(result, 1, ?) FROM approval_requests WHERE result IS NOT NULL`, HeaderLen)
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		var head []byte
		if err := rows.Scan(&id, &head); err != nil {
			rows.Close()
			return 0, err
		}
		if until, ok := KeptUntil(head); !ok || !now.Before(until) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// secure_delete overwrites the erased bytes in the page instead of
	// leaving them in its free space: a plain result an older version
	// wrote must not linger in the file after it is erased. PostgreSQL has
	// no such setting (the old row version stays until VACUUM), but only
	// SQLite databases hold results from versions that did not seal them.
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if db.Dialect() == store.SQLite {
		if _, err := conn.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
			return 0, err
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA secure_delete = OFF`)
	}
	for _, id := range ids {
		if _, err := conn.ExecContext(ctx, `UPDATE approval_requests SET result = NULL WHERE id = ?`, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// ResultIndex lets Erase find the kept results without reading every
// request.
const ResultIndex = `CREATE INDEX IF NOT EXISTS approval_requests_kept_result
	ON approval_requests (id) WHERE result IS NOT NULL`
