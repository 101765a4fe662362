package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// archiveAndPrune writes the archive of entries through seq through and
// prunes them (the file is verified by the caller in real use: package
// verify's tests and the archive command do).
func archiveAndPrune(t *testing.T, l *Log, through int64) []byte {
	t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	cp, err := l.WriteArchive(ctx, &buf, through)
	if err != nil {
		t.Fatalf("WriteArchive: %v", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if _, err := l.Prune(ctx, Pruning{Checkpoint: cp, ArchiveSHA256: hex.EncodeToString(sum[:]), Archive: "archive.jsonl"}); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	return buf.Bytes()
}

func TestPrunedLogReopensAndAppends(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Open(t, dir)
	key := seededKey(1)
	l, err := Open(ctx, db, key, Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	archive := archiveAndPrune(t, l, 6)
	if n := bytes.Count(archive, []byte{'\n'}); n != 7 {
		t.Fatalf("archive has %d lines, want 6 entries and a checkpoint", n)
	}
	mustAppend(t, l, Entry{Kind: vocab.KindAgentFrozen, Agent: "agent-1", Approver: "cli:root", Reason: "frozen"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var left int64
	db.QueryRow(`SELECT COUNT(*) FROM audit_entries WHERE seq <= 6`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d archived entries still stored", left)
	}
	// The startup check starts the chain on the archive's last hash and tree.
	l, err = Open(ctx, db, key, Options{Now: stepClock()})
	if err != nil {
		t.Fatalf("Open after pruning: %v", err)
	}
	defer l.Close()
	mustAppend(t, l, Entry{Kind: vocab.KindAgentUnfrozen, Agent: "agent-1", Approver: "cli:root", Reason: "unfrozen"})
	export := exportBytes(t, l, 0)
	if !bytes.HasPrefix(export, []byte(`{"seq":7,`)) {
		t.Fatalf("export after pruning starts %.40q, want seq 7", export)
	}
	if through, _ := l.PrunedThrough(ctx); through != 6 {
		t.Fatalf("PrunedThrough = %d, want 6", through)
	}
	// The archive's last entry is the line the stored chain links to.
	if _, err := l.WriteArchive(ctx, &bytes.Buffer{}, 5); err == nil || !strings.Contains(err.Error(), "already archived") {
		t.Fatalf("archiving pruned entries again: %v", err)
	}
}

func TestPruneRefusesACheckpointOfOtherEntries(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	ctx := context.Background()
	l := openSQLite(t, seededKey(1))
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	// A checkpoint of another log of the same key and size.
	other := openSQLite(t, seededKey(1))
	for _, e := range sampleEntries()[1:] {
		mustAppend(t, other, e)
	}
	mustAppend(t, other, sampleEntries()[0])
	cp, err := other.WriteArchive(ctx, &bytes.Buffer{}, 4)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Prune(ctx, Pruning{Checkpoint: cp, ArchiveSHA256: strings.Repeat("0", 64)})
	if err == nil || !strings.Contains(err.Error(), "not of this log's entries") {
		t.Fatalf("Prune with another log's checkpoint: %v", err)
	}
	if last, _ := l.LastSeq(ctx); last != int64(len(sampleEntries())) {
		t.Fatalf("log changed: last seq %d", last)
	}
	// The head stays: archiving the last entry is refused.
	if _, err := l.WriteArchive(ctx, &bytes.Buffer{}, last(t, l)); err == nil {
		t.Fatal("archived the log's last entry")
	}
}

func last(t *testing.T, l *Log) int64 {
	seq, err := l.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestPrunedTreeTamperRefused(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	l, err := Open(ctx, db, seededKey(1), Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	archiveAndPrune(t, l, 4)
	l.Close()
	// The stored hash the chain links to, changed: the next entry's
	// prev_hash no longer matches.
	if _, err := db.Exec(`UPDATE audit_pruned SET hash = ?`, strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(ctx, db, seededKey(1), Options{})
	var te *TamperError
	if !errors.As(err, &te) || te.Seq != 5 {
		t.Fatalf("Open with a changed pruned hash: %v", err)
	}
	l2.Close()
}

const pruneCrashEnv = "COUNTERSIGN_TEST_PRUNE_CRASH"

// TestPruneKilledMidTransaction kills a process inside the pruning
// transaction, after its DELETE: on reopening, nothing is pruned, the
// log verifies and the archive can be taken again.
func TestPruneKilledMidTransaction(t *testing.T) {
	if dir := os.Getenv(pruneCrashEnv); dir != "" {
		pruneAndDie(dir)
		return
	}
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPruneKilledMidTransaction$")
	cmd.Env = append(os.Environ(), pruneCrashEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}
	ctx := context.Background()
	db := storetest.Open(t, dir)
	l, err := Open(ctx, db, seededKey(1), Options{Now: stepClock()})
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer l.Close()
	if through, err := l.PrunedThrough(ctx); err != nil || through != 0 {
		t.Fatalf("PrunedThrough after the crash = %d, %v; want nothing pruned", through, err)
	}
	var stored int64
	db.QueryRow(`SELECT COUNT(*) FROM audit_entries`).Scan(&stored)
	n := int64(len(sampleEntries())) + 1 // and the audit.pruned entry, committed before
	if stored != n {
		t.Fatalf("%d entries stored after the crash, want all %d", stored, n)
	}
	if _, err := os.Stat(filepath.Join(dir, "archive.jsonl")); err != nil {
		t.Fatal(err)
	}
	archiveAndPrune(t, l, 6) // a second try prunes
}

// pruneAndDie is the child: it archives and is killed inside the pruning
// transaction.
func pruneAndDie(dir string) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, store.FileName))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := Open(ctx, db, seededKey(1), Options{Now: stepClock()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, e := range sampleEntries() {
		if _, err := l.Append(ctx, e); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	var buf bytes.Buffer
	cp, err := l.WriteArchive(ctx, &buf, 6)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "archive.jsonl"), buf.Bytes(), 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pruneHook = func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	sum := sha256.Sum256(buf.Bytes())
	l.Prune(ctx, Pruning{Checkpoint: cp, ArchiveSHA256: hex.EncodeToString(sum[:])})
	fmt.Fprintln(os.Stderr, "the pruning committed: the hook did not run")
	os.Exit(3)
}

func TestArchivePoint(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	ctx := context.Background()
	l := openSQLite(t, seededKey(1))
	var times []time.Time
	for _, e := range sampleEntries() {
		out := mustAppend(t, l, e)
		at, err := time.Parse(TimeFormat, out.Time)
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, at)
	}
	n := int64(len(times))
	for _, c := range []struct {
		before time.Time
		want   int64
	}{
		{times[0], 0},
		{times[0].Add(-time.Hour), 0},
		{times[0].Add(time.Nanosecond), 1},
		{times[4], 4},
		{times[n-1], n - 1},
		{times[n-1].Add(time.Hour), n},
	} {
		if got, err := l.ArchivePoint(ctx, c.before); err != nil || got != c.want {
			t.Errorf("ArchivePoint(%s) = %d, %v; want %d", c.before.Format(TimeFormat), got, err, c.want)
		}
	}
	archiveAndPrune(t, l, 3)
	if got, _ := l.ArchivePoint(ctx, times[2]); got != 0 {
		t.Errorf("ArchivePoint before the first stored entry = %d, want 0", got)
	}
	if got, _ := l.ArchivePoint(ctx, times[5]); got != 5 {
		t.Errorf("ArchivePoint after pruning = %d, want 5", got)
	}
}

// openSQLite opens a log on a SQLite file whatever store the test pass
// runs on: archiving is built for the SQLite log only.
func openSQLite(t *testing.T, key ed25519.PrivateKey) *Log {
	t.Helper()
	l, err := Open(context.Background(), storetest.Open(t, t.TempDir()), key, Options{Now: stepClock()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
