package secrets

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMACKeyIsCreatedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateMACKey(dir)
	must(t, err)
	k2, err := LoadOrCreateMACKey(dir)
	must(t, err)
	if k1.ID != k2.ID || k1.Sum([]byte("hunter2")) != k2.Sum([]byte("hunter2")) {
		t.Fatal("the key changed between loads")
	}
	path := filepath.Join(dir, MACKeyFile)
	fi, err := os.Stat(path)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	// What docs/audit-export.md tells an auditor to compute.
	raw, err := os.ReadFile(path)
	must(t, err)
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	must(t, err)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hunter2"))
	if got := hex.EncodeToString(m.Sum(nil)); got != k1.Sum([]byte("hunter2")) {
		t.Errorf("Sum %s, HMAC-SHA256 with the file's key %s", k1.Sum([]byte("hunter2")), got)
	}
	if plain := sha256.Sum256([]byte("hunter2")); k1.Sum([]byte("hunter2")) == hex.EncodeToString(plain[:]) {
		t.Error("the record is a plain SHA-256")
	}
	must(t, os.Chmod(path, 0o644))
	if _, err := LoadOrCreateMACKey(dir); err == nil || !strings.Contains(err.Error(), "too open") {
		t.Errorf("a world-readable key: %v", err)
	}
}
