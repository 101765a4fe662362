//go:build unix

package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// An owner is alive while it holds its lock, dead once its file is left
// unlocked (and then its file goes), and unknown without a file; a
// database in memory tells nobody dead.
func TestOwnersTellTheDeadFromTheLiving(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(ctx, filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	owners := OwnersOf(ctx, &DB{DB: db})
	if !owners.Tracked() {
		t.Fatal("owners of a database file are not tracked")
	}
	release, err := owners.Hold("live")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owners.Hold("live"); err == nil {
		t.Error("a second Hold of one owner id succeeded")
	}
	dead := filepath.Join(dir, OwnerFilePrefix+"dead")
	if err := os.WriteFile(dead, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := owners.Listed(); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"dead", "live"}) {
		t.Errorf("listed owners %v, want dead and live", got)
	}
	if owners.Dead("live") {
		t.Error("an owner holding its lock was told dead")
	}
	if owners.Dead("never-seen") {
		t.Error("an owner without a file was told dead")
	}
	if !owners.Dead("dead") {
		t.Error("an owner whose file is unlocked was not told dead")
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead owner's file is still there: %v", err)
	}
	release()
	if got := owners.Listed(); len(got) != 0 {
		t.Errorf("owners listed after release: %v", got)
	}

	mem, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	inMemory := OwnersOf(ctx, &DB{DB: mem})
	if inMemory.Tracked() || inMemory.Dead("dead") {
		t.Error("owners of a database in memory can be told dead")
	}
	if release, err := inMemory.Hold("x"); err != nil {
		t.Error(err)
	} else {
		release()
	}
}
