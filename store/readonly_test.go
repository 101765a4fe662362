package store_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

func copyFiles(t *testing.T, from, to string, names ...string) {
	t.Helper()
	for _, n := range names {
		src, err := os.Open(filepath.Join(from, n))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, n))
		if err == nil {
			_, err = io.Copy(dst, src)
			dst.Close()
		}
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func countRows(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A read-only copy is read whole, whether its commits are in the file or
// still in the write-ahead log copied with it; a -wal holding commits
// without its -shm is refused rather than read short.
func TestOpenReadOnlyReadsACopyNobodyMayWrite(t *testing.T) {
	ctx := context.Background()
	live := t.TempDir()
	path := filepath.Join(live, store.FileName)
	w, err := store.Connect(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ExecContext(ctx, `CREATE TABLE t (n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := w.ExecContext(ctx, `INSERT INTO t (n) VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of a serving directory: the commits are in the -wal.
	serving := t.TempDir()
	copyFiles(t, live, serving, store.FileName, store.FileName+"-wal", store.FileName+"-shm")
	noShm := t.TempDir()
	copyFiles(t, live, noShm, store.FileName, store.FileName+"-wal")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A copy of a directory whose server stopped: one file.
	stopped := t.TempDir()
	copyFiles(t, live, stopped, store.FileName)

	for name, dir := range map[string]string{"serving": serving, "stopped": stopped} {
		t.Run(name, func(t *testing.T) {
			view := storetest.ReadOnlyView(t, dir)
			db, err := store.OpenReadOnly(ctx, filepath.Join(view, store.FileName))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if n := countRows(t, db); n != 50 {
				t.Errorf("read %d rows of 50", n)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO t (n) VALUES (1)`); err == nil {
				t.Error("a read-only database took a write")
			}
		})
	}
	t.Run("wal without shm", func(t *testing.T) {
		view := storetest.ReadOnlyView(t, noShm)
		_, err := store.OpenReadOnly(ctx, filepath.Join(view, store.FileName))
		if err == nil || !strings.Contains(err.Error(), "-shm") {
			t.Fatalf("a -wal of commits without its -shm: %v", err)
		}
	})
}
