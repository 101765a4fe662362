package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditArchiveCLI: archive, prune, append, export, and verify the
// export --previous the archive; a tampered archive is refused; a second
// archive needs the first and verifies alone.
func TestAuditArchiveCLI(t *testing.T) {
	dir := t.TempDir()
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, dir, args...)
		if code != 0 {
			t.Fatalf("countersign %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, errOut, code := cli(t, dir, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("countersign %s: exit %d, want a failure saying %q\n%s\n%s", strings.Join(args, " "), code, want, out, errOut)
		}
	}
	must("agents", "freeze", "a1", "--reason", "before")
	must("agents", "freeze", "a2", "--reason", "before")
	cut := time.Now().UTC().Format(time.RFC3339Nano)
	must("agents", "unfreeze", "a1")
	keyFile := filepath.Join(dir, "pub.txt")
	os.WriteFile(keyFile, []byte(must("audit", "pubkey")), 0o600)

	arch := filepath.Join(dir, "archive-1.jsonl")
	out := must("audit", "archive", "--before", cut, "--out", arch)
	if !strings.Contains(out, "archived seq 1 to 2") {
		t.Fatalf("archive said: %s", out)
	}
	fails("never overwritten", "audit", "archive", "--before", cut, "--out", arch)
	must("agents", "freeze", "a3")
	export := filepath.Join(dir, "export.jsonl")
	must("audit", "export", "--out", export)
	if out := must("audit", "verify", export, "--previous", arch, "--key", keyFile); !strings.Contains(out, "consistent with the previous export (size 2)") {
		t.Fatalf("verify --previous the archive: %s", out)
	}
	fails("previous export", "audit", "verify", export, "--key", keyFile)

	data, _ := os.ReadFile(arch)
	tampered := filepath.Join(dir, "tampered.jsonl")
	os.WriteFile(tampered, []byte(strings.Replace(string(data), `"a2"`, `"a9"`, 1)), 0o600)
	fails("seq 2", "audit", "verify", export, "--previous", tampered, "--key", keyFile)

	cut = time.Now().UTC().Format(time.RFC3339Nano)
	must("agents", "unfreeze", "a3")
	arch2 := filepath.Join(dir, "archive-2.jsonl")
	fails("--previous", "audit", "archive", "--before", cut, "--out", arch2)
	fails("does not verify", "audit", "archive", "--before", cut, "--out", arch2, "--previous", tampered)
	must("audit", "archive", "--before", cut, "--out", arch2, "--previous", arch)
	if out := must("audit", "verify", arch2, "--key", keyFile); !strings.Contains(out, "OK") {
		t.Fatalf("the second archive alone: %s", out)
	}
	must("audit", "export", "--out", export)
	must("audit", "verify", export, "--previous", arch2, "--key", keyFile)
}
