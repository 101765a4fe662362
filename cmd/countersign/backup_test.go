package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// waitCalls waits until the agents of l made at least want calls.
func waitCalls(t *testing.T, l *load, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls in 60s, want %d", l.count(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// isPrefix checks that the entries of older are the first of newer, hash
// for hash.
func isPrefix(t *testing.T, older, newer *export) {
	t.Helper()
	if len(newer.entries) < len(older.entries) {
		t.Fatalf("%d entries, fewer than the %d there were before", len(newer.entries), len(older.entries))
	}
	for i, e := range older.entries {
		if newer.entries[i].Hash != e.Hash {
			t.Fatalf("entry %d differs: seq %d %s, was seq %d %s", i, newer.entries[i].Seq, newer.entries[i].Kind, e.Seq, e.Kind)
		}
	}
}

// A backup taken while agents' calls run is one consistent copy that
// verifies. Restored as the README says (stop, replace countersign.db,
// remove -wal and -shm, start), it holds every entry the log had when
// the backup began; the witness file, which saw the entries written
// after it, refuses it as a rollback until the operator accepts the loss
// (serve --accept-rollback); the log then verifies.
func TestBackupUnderLoadVerifiesAndRestores(t *testing.T) {
	s := newSite(t, func(c *config.Config) {
		c.Audit.WitnessFile = filepath.Join(t.TempDir(), "witness")
		c.Limits.CallsPerSecond = 1000 // four busy agents, all "anonymous"
	})
	n := s.start()
	l := &load{stop: make(chan struct{}), acked: map[string]bool{}}
	l.start(t, n, 0, 4)
	finish := sync.OnceFunc(l.finish)
	defer finish()
	waitCalls(t, l, 100)

	before := s.exportAndVerify() // every entry here is older than the backup
	file := filepath.Join(t.TempDir(), "countersign-backup.db")
	out := s.cli("backup", file)
	if !strings.Contains(out, "its audit log verifies: OK:") {
		t.Fatalf("backup: %s", out)
	}
	waitCalls(t, l, l.count()+100) // the calls went on, and go on after it
	finish()
	if f := l.failures(); len(f) > 0 {
		t.Fatalf("calls failed under the backup: %v", f)
	}
	if err := s.cliErr("backup", file); err == nil || !strings.Contains(err.Error(), "exists; a backup never overwrites") {
		t.Errorf("a second backup to the same file: %v", err)
	}
	n.term()
	last := s.exportAndVerify()
	if len(last.entries) <= len(before.entries) {
		t.Fatalf("the log did not grow under load: %d entries, %d before the backup", len(last.entries), len(before.entries))
	}

	data := s.cfg.Server.DataDir
	copyFile(t, file, filepath.Join(data, store.FileName))
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(filepath.Join(data, store.FileName+suffix)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	code, stderr := s.secondServe()
	if code == 0 || !strings.Contains(stderr, "audit log rolled back") {
		t.Fatalf("serve on the restored copy under a witness that saw more: exit %d\n%s", code, stderr)
	}
	n = s.startWith([]string{"--accept-rollback"})
	n.term()
	restored := s.exportAndVerify()
	isPrefix(t, before, restored)
	if !hasKind(restored, vocab.KindRollbackAccepted) {
		t.Error("the accepted rollback is not in the log")
	}
	t.Logf("%d entries before the backup, %d at the end, %d after the restore", len(before.entries), len(last.entries), len(restored.entries))
}

func hasKind(ex *export, kind vocab.Kind) bool {
	for _, e := range ex.entries {
		if e.Kind == kind {
			return true
		}
	}
	return false
}
