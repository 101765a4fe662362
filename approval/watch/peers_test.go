package watch

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// TestMain stops the PostgreSQL server the tests started (package pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// A change announced in a transaction reaches another replica's hub when
// that transaction commits, and never when it rolls back: the first id
// B's hooks hear is the committed one.
func TestAnnounceTravelsWithItsTransaction(t *testing.T) {
	url := pgtest.URL(t)
	a, b := storetest.Connect(t, url), storetest.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub := New()
	heard := make(chan string, 16)
	hub.OnChange(func(id string) { heard <- id })
	hub.Listen(ctx, b, slog.New(slog.DiscardHandler))

	rollback := errors.New("roll back")
	err := a.InTx(ctx, func(tx *sql.Tx) error {
		if err := Announce(ctx, a, tx, "rolled-back"); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if err := a.InTx(ctx, func(tx *sql.Tx) error { return Announce(ctx, a, tx, "committed") }); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-heard:
		if id != "committed" {
			t.Fatalf("B heard %q first, want the committed change", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("B never heard of the committed change")
	}
}

// On SQLite one process uses the database: announcing costs nothing and
// fails nothing.
func TestAnnounceOnSQLiteDoesNothing(t *testing.T) {
	db := storetest.Connect(t, t.TempDir()+"/"+store.FileName)
	err := db.InTx(context.Background(), func(tx *sql.Tx) error { return Announce(context.Background(), db, tx, "x") })
	if err != nil {
		t.Fatal(err)
	}
}
