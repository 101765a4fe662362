package audit

import (
	"context"

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
	found, err := l.read(ctx, "an interrupted call", `SELECT body FROM audit_entries WHERE CAST(body AS TEXT) LIKE ? ORDER BY seq`, "%"+interruptedMember+"%")
	if err != nil {
		return nil, err
	}
	// The text may also stand inside another entry's arguments or reason.
	out := found[:0]
	for _, e := range found {
		if e.Kind == vocab.KindCallInterrupted {
			out = append(out, e)
		}
	}
	return out, nil
}
