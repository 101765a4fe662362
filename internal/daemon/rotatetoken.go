package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pkcs11key"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/token"
)

// retiredTokenPub ends the name of a retired token key's record: a server
// key in a token cannot be kept as a file, so what the key set needs of
// it (the approval token key's public half) is kept instead.
const retiredTokenPub = ".token-pub"

// RotateKeyToToken hands the audit log to the Ed25519 key to names in a
// PKCS #11 token, offline, as [RotateKey] does for a new file key: from
// the file key (audit.key_file or server.key) or from the token key
// audit.pkcs11 names now. With generate the key pair is made in the
// token first (refused if one by that label exists); else it must exist.
//
// A file key rotated away is kept as server.key.retired-<keyhash> in the
// data directory, where the key set looks once audit.pkcs11 is set; a
// token key rotated away stays in its token, and its approval token key's
// public half is kept as server.key.retired-<keyhash>.token-pub, so that
// tokens it signed verify for their lifetime. The configuration must then
// name the new key (audit.pkcs11, without audit.key_file): the server
// refuses any key but the one the log names in force.
func RotateKeyToToken(ctx context.Context, c *config.Config, to config.AuditPKCS11, generate bool, reason string, opts audit.Options) (previous, next string, err error) {
	if c.Store.URL != "" {
		return "", "", errors.New("audit rotate-key works on SQLite data directories only so far: see README, Key rotation")
	}
	if to == c.Audit.PKCS11 {
		return "", "", fmt.Errorf("audit.pkcs11 already names key %q of token %q: rotate to another key", to.Key, to.Token)
	}
	lock, err := lockDataDir(c)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	newKey, err := openOrGenerate(to, generate)
	if err != nil {
		return "", "", err
	}
	defer newKey.Close()
	var oldTokenKey ed25519.PrivateKey // what the key set needs of an old token key
	if c.Audit.PKCS11.Enabled() {
		if oldTokenKey, err = derivationKey(c); err != nil {
			return "", "", err
		}
	}
	db, log, err := OpenAudit(ctx, c, opts)
	if err != nil {
		if log != nil {
			log.Close()
			db.Close()
		}
		return "", "", err
	}
	defer db.Close()
	previous = log.PublicKey()
	_, rerr := log.RotateKey(ctx, newKey, reason)
	if cerr := log.Close(); rerr == nil {
		rerr = cerr
	}
	if rerr != nil {
		return "", "", fmt.Errorf("rotate the server key: %w", rerr)
	}
	next = audit.PublicKeyText(newKey.Public().(ed25519.PublicKey))
	hash, _, _ := strings.Cut(strings.TrimPrefix(previous, audit.KeyName+"+"), "+")
	retired := filepath.Join(c.Server.DataDir, audit.KeyFile) + retiredSuffix + hash
	if c.Audit.PKCS11.Enabled() {
		tk, err := token.DeriveKey(oldTokenKey)
		if err != nil {
			return "", "", err
		}
		pub := base64.StdEncoding.EncodeToString(tk.Public().(ed25519.PublicKey))
		if err := os.WriteFile(retired+retiredTokenPub, []byte(pub+"\n"), 0o600); err != nil {
			return "", "", fmt.Errorf("the log now names the token's key, but keeping the old token key for the key set failed: %w", err)
		}
		return previous, next, nil
	}
	if err := os.Rename(keyPath(c), retired); err != nil {
		return "", "", fmt.Errorf("the log now names the token's key, but retiring %s failed: %w; move it to %s", keyPath(c), err, retired)
	}
	now := time.Now() // the rotation's time: see retiredTokenKeys
	os.Chtimes(retired, now, now)
	if d, err := os.Open(c.Server.DataDir); err == nil {
		d.Sync()
		d.Close()
	}
	return previous, next, nil
}

func openOrGenerate(to config.AuditPKCS11, generate bool) (*pkcs11key.Key, error) {
	if !generate {
		return openTokenKey(to)
	}
	k, err := openTokenKey(to)
	if err == nil {
		k.Close()
		return nil, fmt.Errorf("token %q holds a key labelled %q already: rotate to it without --generate, or choose another label", to.Token, to.Key)
	}
	if !errors.Is(err, pkcs11key.ErrNoKey) {
		return nil, err
	}
	pin, _ := to.PIN()
	k, err = pkcs11key.Generate(to.Module, to.Token, pin, to.Key)
	if err != nil {
		return nil, fmt.Errorf("generating key %q in token %q: %w", to.Key, to.Token, err)
	}
	return k, nil
}

// retiredTokenPubKey reads a retired token key's record.
func retiredTokenPubKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: not an Ed25519 public key", path)
	}
	return ed25519.PublicKey(raw), nil
}

// retiredTokenRecords adds to out the token keys of token keys rotated
// away less than token.MaxLifetime ago (their records' time).
func retiredTokenRecords(c *config.Config, now time.Time, out []token.RetiredKey) ([]token.RetiredKey, error) {
	files, err := filepath.Glob(keyPath(c) + retiredSuffix + "*" + retiredTokenPub)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		until := info.ModTime().Add(token.MaxLifetime)
		if !now.Before(until) {
			continue
		}
		pub, err := retiredTokenPubKey(f)
		if err != nil {
			return nil, err
		}
		out = append(out, token.RetiredKey{Public: pub, Until: until})
	}
	return out, nil
}
