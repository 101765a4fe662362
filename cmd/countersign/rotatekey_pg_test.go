package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
)

// audit rotate-key on PostgreSQL: refused while a replica runs; with
// every replica stopped it hands the shared log to a new key, writes it at
// audit.key_file and records it in the database. A replica started with
// the old key file is refused, naming both keys; one with the new key
// serves, and the export verifies from the first key.
func TestAuditRotateKeyOnPostgres(t *testing.T) {
	sites, url, first := replicaSites(t, 2)
	a, b := sites[0], sites[1]
	na := a.start()
	err := b.cliErr("audit", "rotate-key", "--reason", "yearly")
	if err == nil || !strings.Contains(err.Error(), "running") || !strings.Contains(err.Error(), na.owner) {
		t.Fatalf("rotate-key while replica %s runs: %v", na.owner, err)
	}
	keyFile := a.cfg.Audit.KeyFile
	old, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	na.term()

	second := strings.TrimSpace(b.cli("audit", "rotate-key", "--reason", "yearly"))
	if second == first || !strings.HasPrefix(second, "countersign+") {
		t.Fatalf("rotate-key printed %q (the first key was %s)", second, first)
	}
	if got := strings.TrimSpace(a.cli("audit", "pubkey")); got != second {
		t.Fatalf("audit pubkey at audit.key_file after the rotation: %s, want %s", got, second)
	}
	if retired, _ := filepath.Glob(keyFile + ".retired-*"); len(retired) != 1 {
		t.Fatalf("retired key files %v, want 1", retired)
	}

	// A replica that kept a copy of the old key file is refused.
	oldCopy := filepath.Join(t.TempDir(), "server.key")
	if err := os.WriteFile(oldCopy, old, 0o600); err != nil {
		t.Fatal(err)
	}
	stale := newSite(t, func(c *config.Config) { c.Store.URL, c.Audit.KeyFile = url, oldCopy })
	out, err := stale.serveCmd(nil).CombinedOutput()
	if err == nil {
		t.Fatal("a replica with the retired key served")
	}
	for _, k := range []string{first, second} {
		if !strings.Contains(string(out), k) {
			t.Errorf("the refusal does not name %s:\n%s", k, out)
		}
	}

	// Both replicas serve with the new key; the log verifies from the
	// first key through the rotation.
	na = a.start()
	b.key = a.key // the approver enrolled once, in the shared database
	nb := b.start()
	checkBalanceOn(t, nb)
	na.term()
	nb.term()
	file := a.exportFile()
	raw, _ := os.ReadFile(file)
	if n := strings.Count(string(raw), `"kind":"key.rotated"`); n != 1 {
		t.Fatalf("the export holds %d key.rotated entries, want 1", n)
	}
	if out := a.cli("audit", "verify", file, "--key", first); !strings.HasPrefix(out, "OK:") {
		t.Fatalf("audit verify from the first key: %s", out)
	}
	if err := a.cliErr("audit", "verify", file, "--key", second); err == nil {
		t.Fatal("the export verified from the new key, which did not sign its beginning")
	}
}
