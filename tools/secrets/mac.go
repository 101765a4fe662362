package secrets

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A plain SHA-256 of a secret value in the audit log would let anyone
// holding an export test guesses offline, and most secrets (passwords, short
// tokens) are guessable. So read_secret records an HMAC-SHA256 of the value
// under a key that never leaves the data directory: an auditor who is given
// the key can check that a given value was the one read; nobody else learns
// anything from the record.

// MACKeyFile is the key's file in the data directory: 32 random bytes as
// 64 hex digits and a newline, mode 0600, created on first use.
const MACKeyFile = "secret-values.hmac.key"

// MACKey keys the records of secret values.
type MACKey struct {
	key []byte
	// ID names the key in records (the first 16 hex digits of the
	// SHA-256 of the key), so an auditor knows which key checks them.
	ID string
}

// NewMACKey wraps a key; at least 32 bytes.
func NewMACKey(key []byte) (MACKey, error) {
	if len(key) < 32 {
		return MACKey{}, fmt.Errorf("secrets: MAC key of %d bytes, want at least 32", len(key))
	}
	id := sha256.Sum256(key)
	return MACKey{key: append([]byte(nil), key...), ID: hex.EncodeToString(id[:8])}, nil
}

// Sum is the hex HMAC-SHA256 of value.
func (k MACKey) Sum(value []byte) string {
	m := hmac.New(sha256.New, k.key)
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil))
}

// LoadOrCreateMACKey returns the key in dir/MACKeyFile, creating it on
// first use. A file readable or writable by others is refused: whoever
// reads it can test guesses against the log.
func LoadOrCreateMACKey(dir string) (MACKey, error) {
	path := filepath.Join(dir, MACKeyFile)
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createMACKey(dir, path)
	}
	if err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	if !info.Mode().IsRegular() {
		return MACKey{}, fmt.Errorf("secrets: MAC key %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return MACKey{}, fmt.Errorf("secrets: MAC key %s: permissions %#o are too open; want 0600 (chmod 600 %s)", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key %s: not hex: %w", path, err)
	}
	return NewMACKey(key)
}

func createMACKey(dir, path string) (MACKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	// O_EXCL: if another process created the key meanwhile, use theirs.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateMACKey(dir)
	}
	if err != nil {
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return MACKey{}, fmt.Errorf("secrets: MAC key: %w", err)
	}
	return NewMACKey(key)
}
