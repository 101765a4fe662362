package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/token"
)

// audit rotate-key twice on a data directory: the export verifies from
// the first key, the key file holds the newest key and the old ones are
// kept beside it.
func TestAuditRotateKeyTwiceVerifiesFromTheFirstKey(t *testing.T) {
	c := testConfig(t, nil)
	first := strings.TrimSpace(runCLI(t, c, "audit", "pubkey"))
	runCLI(t, c, "audit", "export", "--out", filepath.Join(t.TempDir(), "empty.jsonl")) // creates the log
	second := strings.TrimSpace(runCLI(t, c, "audit", "rotate-key", "--reason", "yearly"))
	third := strings.TrimSpace(runCLI(t, c, "audit", "rotate-key", "--reason", "moved"))
	if second == first || third == second || !strings.HasPrefix(third, "countersign+") {
		t.Fatalf("keys %q, %q, %q: want three different keys", first, second, third)
	}
	if got := strings.TrimSpace(runCLI(t, c, "audit", "pubkey")); got != third {
		t.Fatalf("audit pubkey after rotating: %s, want %s", got, third)
	}
	retired, _ := filepath.Glob(filepath.Join(c.Server.DataDir, "server.key.retired-*"))
	if len(retired) != 2 {
		t.Fatalf("retired key files %v, want 2", retired)
	}
	// The token key set publishes the retired keys' token keys while
	// tokens they signed before the rotation may live, and no longer.
	if n := strings.Count(runCLI(t, c, "token", "jwks"), `"kid"`); n != 3 {
		t.Fatalf("token jwks right after two rotations lists %d keys, want 3", n)
	}
	past := time.Now().Add(-token.MaxLifetime - time.Minute)
	for _, f := range retired {
		if err := os.Chtimes(f, past, past); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(runCLI(t, c, "token", "jwks"), `"kid"`); n != 1 {
		t.Fatalf("token jwks once the retired keys' tokens expired lists %d keys, want 1", n)
	}

	export := filepath.Join(t.TempDir(), "log.jsonl")
	runCLI(t, c, "audit", "export", "--out", export)
	body, _ := os.ReadFile(export)
	if n := strings.Count(string(body), `"kind":"key.rotated"`); n != 2 {
		t.Fatalf("export has %d key.rotated entries, want 2:\n%s", n, body)
	}
	runCLI(t, c, "audit", "verify", export, "--key", first)
	if err := cliCommand(c, "audit", "verify", export, "--key", third).Run(); err == nil {
		t.Fatal("the export verified from the newest key, which did not sign its beginning")
	}
}
