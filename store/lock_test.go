package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A second lock on a directory is refused while the first is held, with
// the holder's pid, start and addresses; once released it is taken again.
func TestLockDirIsExclusiveAndNamesItsHolder(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	first, err := LockDir(dir, Holder{PID: 4242, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Update(Holder{PID: 4242, Since: since, Listen: []string{"approver page 127.0.0.1:8710"}}); err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir, Holder{PID: 1, Since: time.Now()})
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second lock: %v, want an *InUseError", err)
	}
	want := "data directory " + dir + " is in use by countersign serve (pid 4242, since 2026-03-01T09:30:00Z, approver page 127.0.0.1:8710); stop it first"
	if err.Error() != want {
		t.Errorf("refusal %q,\nwant %q", err, want)
	}
	// The refused attempt wrote nothing over the holder's text.
	if b, _ := os.ReadFile(filepath.Join(dir, LockFile)); !strings.Contains(string(b), `"pid":4242`) {
		t.Errorf("lock file after a refused attempt: %s", b)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := LockDir(dir, Holder{PID: 7, Since: time.Now()})
	if err != nil {
		t.Fatalf("after the holder let go: %v", err)
	}
	again.Close()
}

// A holder that has not written its text yet is still refused, without a pid.
func TestLockDirRefusesAHolderThatWroteNothing(t *testing.T) {
	dir := t.TempDir()
	first, err := LockDir(dir, Holder{PID: 4242})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir, Holder{PID: 1})
	if err == nil || err.Error() != "data directory "+dir+" is in use by another countersign serve; stop it first" {
		t.Fatalf("refusal: %v", err)
	}
}
