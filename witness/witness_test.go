package witness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// newLog opens a log in its own database signed with the key in keyDir,
// holding n entries whose reasons start with tag.
func newLog(t *testing.T, keyDir, tag string, n int) *audit.Log {
	t.Helper()
	ctx := context.Background()
	db, err := store.Connect(ctx, filepath.Join(t.TempDir(), store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := audit.LoadOrCreateKey(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(ctx, db.DB, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i := range n {
		if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Tool: "t", Reason: fmt.Sprintf("%s %d", tag, i)}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func witnessFor(t *testing.T, l *audit.Log) *File {
	t.Helper()
	_, v, err := audit.ParsePublicKey(l.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return &File{Path: filepath.Join(t.TempDir(), "witness"), Verifier: v}
}

func record(t *testing.T, w *File, l *audit.Log) {
	t.Helper()
	msg, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Record(msg, false); err != nil {
		t.Fatal(err)
	}
}

func TestLogThatExtendsTheWitnessPasses(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	l := newLog(t, keys, "a", 5)
	w := witnessFor(t, l)
	if err := w.Check(ctx, l); err != nil {
		t.Fatalf("no witness yet: %v", err)
	}
	record(t, w, l)
	if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Tool: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(ctx, l); err != nil {
		t.Fatalf("a longer log: %v", err)
	}
	fi, err := os.Stat(w.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("witness file %v (%v)", fi, err)
	}
	// An older checkpoint never replaces a newer one.
	cp, _ := w.Latest()
	older := newLog(t, keys, "a", 2)
	record(t, w, older)
	if now, _ := w.Latest(); now.Size != cp.Size {
		t.Fatalf("witness went back from %d to %d", cp.Size, now.Size)
	}
}

func TestRolledBackOrRewrittenLogIsRefused(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	full := newLog(t, keys, "a", 5)
	w := witnessFor(t, full)
	record(t, w, full)

	older := newLog(t, keys, "a", 3) // an older copy of the same history
	err := w.Check(ctx, older)
	var rb *RollbackError
	if !errors.As(err, &rb) || rb.Witnessed != 5 || rb.Log != 3 || !strings.Contains(err.Error(), "2 entries short") {
		t.Fatalf("a shorter log: %v", err)
	}
	for _, want := range []string{"tree size 5", "tree size 3", "--accept-rollback"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	other := newLog(t, keys, "b", 6) // as long, another history
	if err := w.Check(ctx, other); !errors.As(err, &rb) || !strings.Contains(err.Error(), "different history") {
		t.Fatalf("a rewritten log: %v", err)
	}
	// A witness file signed by another key is not trusted.
	stranger := newLog(t, t.TempDir(), "a", 5)
	w2 := witnessFor(t, stranger)
	w2.Path = w.Path
	if err := w2.Check(ctx, stranger); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a witness signed by another key: %v", err)
	}
}

// After audit rotate-key the witness file still holds a checkpoint signed
// by the old key: the server, reopened with the new key, checks the log
// against it with the log's earlier keys, records the new key's next
// checkpoint over it, and a rolled-back log is still caught.
func TestWitnessedBeforeARotationChecksAfterIt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Connect(ctx, filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	oldKey, _ := audit.LoadOrCreateKey(t.TempDir())
	newKey, _ := audit.LoadOrCreateKey(t.TempDir())
	l, err := audit.Open(ctx, db.DB, oldKey, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Tool: "t", Reason: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	w := witnessFor(t, l)
	record(t, w, l)
	if _, err := l.RotateKey(ctx, newKey, "yearly"); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l, err = audit.Open(ctx, db.DB, newKey, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	_, v, _ := audit.ParsePublicKey(l.PublicKey())
	if err := (&File{Path: w.Path, Verifier: v}).Check(ctx, l); err == nil {
		t.Fatal("the old key's witnessed checkpoint verified with the new key alone")
	}
	after := &File{Path: w.Path, Verifier: v, Earlier: l.EarlierVerifiers()}
	if err := after.Check(ctx, l); err != nil {
		t.Fatalf("check after the rotation: %v", err)
	}
	record(t, after, l)
	if cp, err := after.Latest(); err != nil || cp.Size != 4 {
		t.Fatalf("witness after recording the new key's checkpoint: %+v, %v", cp, err)
	}
	// A log of other entries, under the same keys, is still refused.
	other := newLog(t, t.TempDir(), "other", 6)
	var rb *RollbackError
	if err := after.Check(ctx, other); !errors.As(err, &rb) {
		t.Fatalf("another log checked against the witness: %v", err)
	}
}
