package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOpenCreatesPrivateWALDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, FileName)
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	var timeout int
	if err := db.QueryRow("PRAGMA busy_timeout").Scan(&timeout); err != nil {
		t.Fatal(err)
	}
	if timeout < 1000 {
		t.Errorf("busy_timeout = %d", timeout)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", p, got, want)
		}
	}
}

func TestSyncModes(t *testing.T) {
	for mode, want := range map[string]int{Full: 2, Normal: 1} {
		db, err := Open(context.Background(), filepath.Join(t.TempDir(), FileName), WithSync(mode))
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := db.QueryRow(`PRAGMA synchronous`).Scan(&got); err != nil || got != want {
			t.Errorf("%s: synchronous = %d (%v), want %d", mode, got, err, want)
		}
		db.Close()
	}
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), FileName), WithSync("off")); err == nil {
		t.Error("sync off was accepted")
	}
}

// BenchmarkKeepAmount is what keeping a counted call's amount adds to a
// call that moves value: one small committed write.
func BenchmarkKeepAmount(b *testing.B) {
	for _, mode := range []string{Full, Normal} {
		b.Run("sync="+mode, func(b *testing.B) {
			ctx := context.Background()
			db, err := Open(ctx, filepath.Join(b.TempDir(), FileName), WithSync(mode))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			a, err := OpenAmounts(ctx, &DB{DB: db})
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			b.ResetTimer()
			for i := range b.N {
				if err := a.KeepAmount(ctx, Amount{Tool: "transfer", ArgsSHA256: fmt.Sprintf("%064x", i), Amount: 9999, Currency: "USD",
					Counterparty: "Acme Supplies", At: now}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The rows' connection commits without a sync of its own (see Amounts);
// the database's other connections keep the configured sync.
func TestAmountsCommitWithoutASyncOfTheirOwn(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := OpenAmounts(ctx, &DB{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var mine, others int
	if err := a.conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&mine); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&others); err != nil {
		t.Fatal(err)
	}
	if mine != 1 || others != 2 {
		t.Errorf("synchronous: %d on the rows' connection, %d on the others; want 1 (NORMAL) and 2 (FULL)", mine, others)
	}
	at := time.Now()
	if err := a.KeepAmount(ctx, Amount{Tool: "transfer", ArgsSHA256: "ab", Amount: 12.5, Currency: "USD", Counterparty: "Acme", At: at}); err != nil {
		t.Fatal(err)
	}
	var amount float64
	if err := db.QueryRowContext(ctx, "SELECT amount FROM usage_amounts WHERE args_sha256 = 'ab'").Scan(&amount); err != nil || amount != 12.5 {
		t.Errorf("another connection reads %v (%v)", amount, err)
	}
}
