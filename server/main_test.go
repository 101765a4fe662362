package server

import (
	"os"
	"testing"

	"github.com/countersign/countersign/store/pgtest"
)

// Routine tasks kept for every replica are tested on a PostgreSQL
// (store/pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
