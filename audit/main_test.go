package audit

import (
	"os"
	"testing"

	"github.com/countersign/countersign/store/pgtest"
)

// TestMain stops the PostgreSQL server the tests started on the
// PostgreSQL pass (storetest.EnvStore; package pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
