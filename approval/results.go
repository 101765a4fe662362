package approval

import (
	"context"
	"time"

	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/store"
)

// The result of an approved call is kept in approval_requests.result,
// sealed (package sealed), for Options.ResultTTL after its run ended for
// the agent to collect, and then erased.

// resultSweep is how often results past their window are erased.
const resultSweep = 30 * time.Second

// sweepResults erases, every resultSweep, the results whose window ended.
func (s *Service) sweepResults(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(resultSweep)
	defer t.Stop()
	for {
		if _, err := s.EraseResults(context.Background()); err != nil {
			s.opts.Logger.Warn("approval: result sweep", "err", err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// EraseResults erases every stored result whose collection window has
// ended, and any result not sealed (left by an older version), and
// returns how many. The sweep calls it; so may a test.
func (s *Service) EraseResults(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, substr(result, 1, ?) FROM approval_requests WHERE result IS NOT NULL`, sealed.HeaderLen)
	if err != nil {
		return 0, err
	}
	var ids []string
	now := s.now()
	for rows.Next() {
		var id string
		var head []byte
		if err := rows.Scan(&id, &head); err != nil {
			rows.Close()
			return 0, err
		}
		if until, ok := sealed.KeptUntil(head); !ok || !now.Before(until) {
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
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if s.db.Dialect() == store.SQLite {
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

// createResultIndex lets the sweep find the kept results without reading
// every request.
const createResultIndex = `CREATE INDEX IF NOT EXISTS approval_requests_kept_result
	ON approval_requests (id) WHERE result IS NOT NULL`
