package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/edwards25519"
	"golang.org/x/mod/sumdb/note"
)

// KeyFile is the server's signing key inside the data directory: a PKCS #8
// Ed25519 private key in PEM, mode 0600.
const KeyFile = "server.key"

// KeyName is the note name of the server key and the checkpoint origin.
const KeyName = "countersign"

// KeyError reports a server key file that cannot be trusted or read.
type KeyError struct {
	Path   string
	Reason string
}

func (e *KeyError) Error() string { return "audit: server key " + e.Path + ": " + e.Reason }

// LoadOrCreateKey returns the server's Ed25519 key from dir/server.key,
// creating it (and dir) on first start. A key file readable or writable by
// anyone but its owner is refused: whoever can read it can forge the log.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(dir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	return loadKey(path, info)
}

// LoadKey returns the Ed25519 key in the file at path, which must exist:
// replicas sharing one log each load the one key made for them all
// ([WriteNewKey]), never a key of their own.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	return loadKey(path, info)
}

func loadKey(path string, info fs.FileInfo) (ed25519.PrivateKey, error) {
	if !info.Mode().IsRegular() {
		return nil, &KeyError{path, "not a regular file"}
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, &KeyError{path, fmt.Sprintf("permissions %#o are too open; want 0600 (chmod 600 %s)", perm, path)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	return parseKey(path, data)
}

func parseKey(path string, data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, &KeyError{path, "not a single PEM \"PRIVATE KEY\" block"}
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, &KeyError{path, "bad PKCS #8 key: " + err.Error()}
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, &KeyError{path, fmt.Sprintf("key is %T, want Ed25519", k)}
	}
	return priv, nil
}

func createKey(dir, path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	priv, err := WriteNewKey(path)
	if errors.Is(err, fs.ErrExist) {
		// Another process created the key meanwhile: use theirs.
		return LoadOrCreateKey(dir)
	}
	return priv, err
}

// WriteNewKey generates a server key and writes it to path (0600),
// refusing a path that exists: a key overwritten is a log nobody can
// extend or sign for again. The error wraps fs.ErrExist then.
func WriteNewKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("audit: server key: %w", err)
	}
	return priv, nil
}

// PublicKeyText is the text form of the server's public key given to
// auditors: the note verifier key "countersign+<keyhash>+<base64 key>",
// where keyhash is 8 hex digits and key is 0x01 followed by the 32-byte
// Ed25519 public key.
func PublicKeyText(pub ed25519.PublicKey) string {
	s, err := note.NewEd25519VerifierKey(KeyName, pub)
	if err != nil {
		// Only a bad name or key length fails; both are fixed here.
		panic("audit: " + err.Error())
	}
	return s
}

// ParsePublicKey parses a key in the [PublicKeyText] form. Surrounding
// space is ignored, so the content of a .pub file can be passed as is.
func ParsePublicKey(text string) (ed25519.PublicKey, note.Verifier, error) {
	text = strings.TrimSpace(text)
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: public key: %w", err)
	}
	if v.Name() != KeyName {
		return nil, nil, fmt.Errorf("audit: public key: name %q, want %q", v.Name(), KeyName)
	}
	// The key data, base64(0x01 || 32 bytes), follows the second "+";
	// standard base64 may itself contain "+".
	_, rest, _ := strings.Cut(text, "+")
	_, data, _ := strings.Cut(rest, "+")
	raw, err := decodeStdBase64(data)
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, nil, errors.New("audit: public key: not an Ed25519 note verifier key")
	}
	// crypto/ed25519 accepts signatures under a key of small order that
	// anyone can make without a private key; such a key proves nothing.
	a, err := new(edwards25519.Point).SetBytes(raw[1:])
	if err != nil {
		return nil, nil, errors.New("audit: public key: not a point on the Ed25519 curve")
	}
	if new(edwards25519.Point).MultByCofactor(a).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, nil, errors.New("audit: public key: of small order (anyone could sign for it)")
	}
	return ed25519.PublicKey(raw[1:]), v, nil
}

// signer signs checkpoint notes with the server key.
type signer struct {
	key  Signer
	pub  ed25519.PublicKey
	hash uint32
	v    note.Verifier
}

func newSigner(key Signer) (*signer, error) {
	pub, err := signerPublic(key)
	if err != nil {
		return nil, err
	}
	_, v, err := ParsePublicKey(PublicKeyText(pub))
	if err != nil {
		return nil, err
	}
	return &signer{key: key, pub: pub, hash: v.KeyHash(), v: v}, nil
}

func (s *signer) Name() string                    { return KeyName }
func (s *signer) KeyHash() uint32                 { return s.hash }
func (s *signer) Sign(msg []byte) ([]byte, error) { return signWith(s.key, s.pub, msg) }
