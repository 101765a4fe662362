package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// A database restored from an older copy is a valid log, only shorter; the
// witness file on another disk is what tells. The real binary refuses to
// serve it, naming both tree sizes, until --accept-rollback, which is
// recorded.
func TestRestoredDatabaseIsRefusedUnlessTheRollbackIsAccepted(t *testing.T) {
	storetest.SQLiteOnly(t, "it restores an older copy of the database by copying its files")
	witnessFile := filepath.Join(t.TempDir(), "countersign.witness")
	s := newSite(t, func(c *config.Config) { c.Audit.WitnessFile = witnessFile })
	small := map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}

	n := s.start()
	servertest.CallTool(t, n.agent(), "transfer", small)
	n.term()
	backup := t.TempDir()
	copyDB(t, s.cfg.Server.DataDir, backup)

	n = s.start()
	cs := n.agent()
	for range 3 {
		servertest.CallTool(t, cs, "transfer", small)
	}
	n.term()
	witnessed := s.exportAndVerify()

	// The bad day: the database comes back from the older copy.
	copyDB(t, backup, s.cfg.Server.DataDir)
	restored := s.exportAndVerify()
	if len(restored.entries) >= len(witnessed.entries) {
		t.Fatalf("the restore did not roll anything back (%d entries, %d before)", len(restored.entries), len(witnessed.entries))
	}

	cmd := s.serveCmd(nil)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("serve on a rolled-back log: %v, want a refusal\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve on a rolled-back log did not refuse:\n%s", stderr.String())
	}
	t.Logf("refusal:\n%s", stderr.String())
	for _, want := range []string{"rolled back", witnessFile, "--accept-rollback"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the refusal does not mention %q:\n%s", want, stderr.String())
		}
	}
	// Both tree sizes: the witnessed one counts the checkpoint's entries.
	if !strings.Contains(stderr.String(), "tree size "+strconv.Itoa(len(restored.entries))) {
		t.Errorf("the refusal does not name the log's tree size %d:\n%s", len(restored.entries), stderr.String())
	}

	n = s.startWith([]string{"--accept-rollback"})
	servertest.CallTool(t, n.agent(), "get_balance", map[string]any{})
	n.term()
	ex := s.exportAndVerify()
	accepted := 0
	for _, e := range ex.entries {
		if e.Kind == vocab.KindRollbackAccepted {
			accepted++
			if !strings.Contains(e.Reason, "tree size") {
				t.Errorf("the accepted rollback does not say what was lost: %q", e.Reason)
			}
		}
	}
	if accepted != 1 {
		t.Errorf("%d audit.rollback_accepted entries, want 1", accepted)
	}
	// From now on the witness follows the new history.
	n = s.start()
	n.term()
}

// copyDB copies the database files (the WAL too, when there is one) from
// one data directory to another, replacing what is there.
func copyDB(t *testing.T, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		name := store.FileName + suffix
		os.Remove(filepath.Join(to, name))
		raw, err := os.ReadFile(filepath.Join(from, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
