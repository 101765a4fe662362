package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/store/storetest"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info.Mode(), err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v, same key %v", err, bytes.Equal(k1, k2))
	}

	path := filepath.Join(dir, KeyFile)
	os.Chmod(path, 0o644)
	var ke *KeyError
	if _, err := LoadOrCreateKey(dir); !errors.As(err, &ke) {
		t.Fatalf("world-readable key accepted: %v", err)
	}
	os.WriteFile(path, []byte("not a key"), 0o600)
	os.Chmod(path, 0o600)
	if _, err := LoadOrCreateKey(dir); !errors.As(err, &ke) {
		t.Fatalf("garbage key accepted: %v", err)
	}
}

func TestPublicKeyText(t *testing.T) {
	key := seededKey(1)
	text := PublicKeyText(key.Public().(ed25519.PublicKey))
	pub, v, err := ParsePublicKey(" " + text + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, key.Public().(ed25519.PublicKey)) || v.Name() != KeyName {
		t.Fatal("round trip lost the key")
	}
	for _, bad := range []string{"", "countersign", "other+00000000+AQ==", text[:len(text)-4]} {
		if _, _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

// Standard base64 key data often contains '+', the field separator.
func TestPublicKeyTextWithPlusInKeyData(t *testing.T) {
	plus := 0
	for b := range 64 {
		key := seededKey(byte(b))
		text := PublicKeyText(key.Public().(ed25519.PublicKey))
		if strings.Count(text, "+") > 2 {
			plus++
		}
		pub, _, err := ParsePublicKey(text)
		if err != nil || !bytes.Equal(pub, key.Public().(ed25519.PublicKey)) {
			t.Fatalf("key %d (%s): %v", b, text, err)
		}
		if _, err := openTest(context.Background(), storetest.Open(t, t.TempDir()), key, Options{}); err != nil {
			t.Fatalf("Open with key %d: %v", b, err)
		}
	}
	if plus == 0 {
		t.Fatal("no key with '+' in its data was tried")
	}
}

// WriteNewKey never overwrites a key; LoadKey never creates one.
func TestWriteNewKeyRefusesAnExistingFileAndLoadKeyReadsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.key")
	if _, err := LoadKey(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKey of a missing file: %v, want not-exist", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("LoadKey created a key")
	}
	k, err := WriteNewKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode().Perm())
	}
	if _, err := WriteNewKey(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second WriteNewKey: %v, want exists", err)
	}
	got, err := LoadKey(path)
	if err != nil || !got.Equal(k) {
		t.Fatalf("LoadKey: %v (same key: %v)", err, got.Equal(k))
	}
}
