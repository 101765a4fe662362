package page

import (
	"os"
	"testing"

	"github.com/countersign/countersign/store/pgtest"
)

// The sign-in sessions shared by replicas are tested on a PostgreSQL
// (store/pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
