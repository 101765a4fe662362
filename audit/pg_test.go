package audit_test

import (
	"context"
	"database/sql"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/store/storetest"
)

// On the PostgreSQL pass (storetest.EnvStore) storetest.Open opens a
// PostgreSQL database; its log goes through auditpg's backend, which the
// package's own tests cannot import.
func init() {
	audit.StoreBackend = func(ctx context.Context, db *sql.DB) (audit.Backend, error) {
		s := storetest.StoreOf(db)
		if s == nil {
			return nil, nil
		}
		return auditpg.New(ctx, s)
	}
}
