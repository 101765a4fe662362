package daemon

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/token"
)

// retiredSuffix follows the key file's name on a key rotated away, before
// the retired key's note key hash.
const retiredSuffix = ".retired-"

// keyPath is where the server key lives: audit.key_file or server.key in
// the data directory.
func keyPath(c *config.Config) string {
	if c.Audit.KeyFile != "" {
		return c.Audit.KeyFile
	}
	return filepath.Join(c.Server.DataDir, audit.KeyFile)
}

// retiredTokenKeys are the token keys of server keys rotated away less
// than token.MaxLifetime ago (by their file's time, set by RotateKey):
// tokens they signed before the rotation may still be shown, so the key
// set publishes them until then.
func retiredTokenKeys(c *config.Config, now time.Time) ([]token.RetiredKey, error) {
	files, err := filepath.Glob(keyPath(c) + retiredSuffix + "*")
	if err != nil {
		return nil, err
	}
	var out []token.RetiredKey
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		until := info.ModTime().Add(token.MaxLifetime)
		if !now.Before(until) {
			continue
		}
		server, err := audit.LoadKey(f)
		if err != nil {
			return nil, err
		}
		key, err := token.DeriveKey(server)
		if err != nil {
			return nil, err
		}
		out = append(out, token.RetiredKey{Public: key.Public().(ed25519.PublicKey), Until: until})
	}
	return out, nil
}

// RotateKey hands the audit log to a new server key, offline: it holds
// the data directory's lock (so no server appends meanwhile, and none
// starts), writes the new key beside the old one (<key>.next), appends
// key.rotated signed by both and a checkpoint signed by the new key, then
// moves the old key to <key>.retired-<keyhash> and the new one into its
// place. A server started afterwards signs with the new key.
//
// Offline, because the key is read once at start (the log, the token key
// derived from it, sealed results): a running server would have to swap
// all of them at one instant between two appends.
//
// If it stops after the entry is committed but before the files are
// moved, the server refuses the old key (the log names the new one in
// force); moving <key>.next to <key> finishes the rotation.
func RotateKey(ctx context.Context, c *config.Config, reason string, opts audit.Options) (previous, next string, err error) {
	if c.Store.URL != "" {
		return "", "", errors.New("audit rotate-key works on SQLite data directories only so far; " +
			"on PostgreSQL every replica shares one key (audit.key_file, recorded in server_key): see README, Key rotation")
	}
	lock, err := lockDataDir(c)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	path := keyPath(c)
	nextPath := path + ".next"
	newKey, err := audit.WriteNewKey(nextPath)
	if errors.Is(err, fs.ErrExist) {
		return "", "", fmt.Errorf("%s exists: an earlier rotate-key stopped part way. If `countersign audit pubkey` fails saying the log's key "+
			"in force is that key's, move it to %s; else remove it and run rotate-key again", nextPath, path)
	}
	if err != nil {
		return "", "", err
	}
	db, log, err := OpenAudit(ctx, c, opts)
	if err != nil {
		if log != nil {
			log.Close()
			db.Close()
		}
		os.Remove(nextPath)
		return "", "", err
	}
	defer db.Close()
	previous = log.PublicKey()
	_, rerr := log.RotateKey(ctx, newKey, reason)
	if cerr := log.Close(); rerr == nil {
		rerr = cerr
	}
	if rerr != nil {
		if log.PublicKey() == previous {
			os.Remove(nextPath) // nothing was committed under it
		}
		return "", "", fmt.Errorf("rotate the server key: %w", rerr)
	}
	next = audit.PublicKeyText(newKey.Public().(ed25519.PublicKey))
	hash, _, _ := strings.Cut(strings.TrimPrefix(previous, audit.KeyName+"+"), "+")
	retired := path + retiredSuffix + hash
	if err := os.Rename(path, retired); err != nil {
		return "", "", fmt.Errorf("the log now names the key in %s, but retiring %s failed: %w; move %s to %s", nextPath, path, err, nextPath, path)
	}
	if err := os.Rename(nextPath, path); err != nil {
		return "", "", fmt.Errorf("the log now names the key in %s, but moving it failed: %w; move it to %s", nextPath, err, path)
	}
	// The retired file's time is the rotation's: the token key derived
	// from it stays published until MaxLifetime after (retiredTokenKeys).
	now := time.Now()
	os.Chtimes(retired, now, now)
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return previous, next, nil
}
