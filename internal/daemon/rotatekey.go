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

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
)

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
	path := c.Audit.KeyFile
	if path == "" {
		path = filepath.Join(c.Server.DataDir, audit.KeyFile)
	}
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
	if err := os.Rename(path, path+".retired-"+hash); err != nil {
		return "", "", fmt.Errorf("the log now names the key in %s, but retiring %s failed: %w; move %s to %s", nextPath, path, err, nextPath, path)
	}
	if err := os.Rename(nextPath, path); err != nil {
		return "", "", fmt.Errorf("the log now names the key in %s, but moving it failed: %w; move it to %s", nextPath, err, path)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return previous, next, nil
}
