package audit

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/countersign/countersign/vocab"
)

// interruptedMember is how the stored line of a call.interrupted entry
// names its kind (encodeLine: compact JSON, struct order). The text of a
// reason or an argument cannot hold it unescaped, and every hit is decoded
// and checked, so it only spares decoding the lines that cannot match
// (SQLite stores the line as a BLOB, which LIKE matches only as TEXT;
// its case folding only lets more lines through).
const interruptedMember = `"kind":"` + string(vocab.KindCallInterrupted) + `"`

// Interrupted returns, in order, the log's call.interrupted entries:
// the calls whose outcome is unknown, which a person may reconcile. They
// are rare; the log is searched for their kind's text before anything is
// decoded.
func (l *Log) Interrupted(ctx context.Context) ([]Entry, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT body FROM audit_entries WHERE CAST(body AS TEXT) LIKE ? ORDER BY seq`, "%"+interruptedMember+"%")
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		var e Entry
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("audit: read an interrupted call: %w", err)
		}
		if e.Kind == vocab.KindCallInterrupted {
			out = append(out, e)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	return out, nil
}
