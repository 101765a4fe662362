package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

func TestCrashKeepsAcknowledgedEntries(t *testing.T) {
	target := storetest.Target(t, filepath.Join(t.TempDir(), store.FileName))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+target)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int64]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(acked) < 3000 {
		seq, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("writer printed %q", sc.Text())
		}
		acked[seq] = true
	}
	// Kill while appends are in flight; whatever was printed was acked.
	cmd.Process.Signal(syscall.SIGKILL)
	for sc.Scan() {
		if seq, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
			acked[seq] = true
		}
	}
	cmd.Wait()
	if len(acked) < 3000 {
		t.Fatalf("writer stopped after %d appends: %s", len(acked), stderr.String())
	}

	sdb := storetest.Connect(t, target)
	db := sdb.DB
	l, err := auditpg.Open(context.Background(), sdb, seededKey(1), audit.Options{})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer l.Close()
	var last int64
	if err := db.QueryRow(`SELECT MAX(seq) FROM audit_entries`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	for seq := range acked {
		if seq > last {
			t.Fatalf("acknowledged seq %d lost; log ends at %d", seq, last)
		}
	}
	// Gapless by Open's check; and the chain keeps growing and verifies.
	mustAppend(t, l, audit.Entry{Kind: vocab.KindCallAllowed})
	s, err := Export(bytes.NewReader(exportBytes(t, l, 0)), l.PublicKey(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.LastSeq != last+1 {
		t.Fatalf("summary %+v, want last seq %d", s, last+1)
	}
}

// crashEnv names the database the writer appends to: a SQLite file or,
// on the PostgreSQL pass, a postgres:// URL.
const crashEnv = "COUNTERSIGN_AUDIT_CRASH_DB"

// TestMain lets the crash test re-execute this binary as the writer, and
// stops the PostgreSQL server the tests started, if any (pgtest).
func TestMain(m *testing.M) {
	if target := os.Getenv(crashEnv); target != "" {
		crashWriter(target)
		return
	}
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// crashWriter appends forever from many goroutines, printing each
// acknowledged seq, until it is killed.
func crashWriter(target string) {
	ctx := context.Background()
	db, err := store.Connect(ctx, target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := auditpg.Open(ctx, db, seededKey(1), audit.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				e, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Agent: fmt.Sprint("g", g), Args: []byte(fmt.Sprintf(`{"i":%d}`, i))})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintln(out, e.Seq)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
