package approval

import (
	"context"
	"database/sql"

	"github.com/countersign/countersign/audit"
)

// outboxPort is this service's outbox as packages ceremony and reconcile
// use it.
type outboxPort struct{ s *Service }

func (o outboxPort) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return o.s.db.InTx(ctx, fn)
}
func (o outboxPort) Enqueue(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	return o.s.enqueue(ctx, tx, "", e)
}
func (o outboxPort) Flush(ctx context.Context) error                 { return o.s.flush(ctx, false) }
func (o outboxPort) Record(ctx context.Context, e audit.Entry) error { return o.s.record(ctx, e) }
