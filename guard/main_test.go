package guard

import (
	"os"
	"testing"

	"github.com/countersign/countersign/store/pgtest"
)

// Tests of the shared usage windows start a PostgreSQL (store/pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
