package daemon

import (
	"os"
	"testing"

	"github.com/countersign/countersign/store/pgtest"
)

// Tests that open PostgreSQL use store/pgtest's cluster, stopped here.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
