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

	"github.com/countersign/countersign/approval/sealed"
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
	var out []token.RetiredKey
	err := eachRetiredKey(c, now, token.MaxLifetime, func(server ed25519.PrivateKey, until time.Time) error {
		key, err := token.DeriveKey(server)
		if err != nil {
			return err
		}
		out = append(out, token.RetiredKey{Public: key.Public().(ed25519.PublicKey), Until: until})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return retiredTokenRecords(c, now, out)
}

// retiredResultKeys are the result keys (sealed.DeriveKey) of server keys
// rotated away less than approval.result_ttl ago: results of calls that
// ran before the rotation were sealed with them, and are kept at most
// that long after it.
func retiredResultKeys(c *config.Config, now time.Time) ([][]byte, error) {
	keep := c.Approval.ResultTTL
	if keep <= 0 {
		keep = sealed.DefaultTTL // approval's default when none is set
	}
	var out [][]byte
	err := eachRetiredKey(c, now, keep, func(server ed25519.PrivateKey, _ time.Time) error {
		key, err := sealed.DeriveKey(server)
		if err != nil {
			return err
		}
		out = append(out, key)
		return nil
	})
	return out, err
}

// eachRetiredKey calls fn with each server key rotated away less than
// keep ago (by its file's time, set by RotateKey) and until when it is
// kept.
func eachRetiredKey(c *config.Config, now time.Time, keep time.Duration, fn func(server ed25519.PrivateKey, until time.Time) error) error {
	files, err := filepath.Glob(keyPath(c) + retiredSuffix + "*")
	if err != nil {
		return err
	}
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			return err
		}
		until := info.ModTime().Add(keep)
		if !now.Before(until) {
			continue
		}
		if strings.HasSuffix(f, retiredTokenPub) {
			continue // a token key's record, no key (retiredTokenKeys)
		}
		server, err := audit.LoadKey(f)
		if err != nil {
			return err
		}
		if err := fn(server, until); err != nil {
			return err
		}
	}
	return nil
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
// On PostgreSQL (store.url) every replica must be stopped
// (rotateOnPostgres).
//
// If it stops after the entry is committed but before the files are
// moved, the server refuses the old key (the log names the new one in
// force); moving <key>.next to <key> finishes the rotation.
func RotateKey(ctx context.Context, c *config.Config, reason string, opts audit.Options) (previous, next string, err error) {
	if c.Audit.PKCS11.Enabled() {
		return "", "", errors.New("the server key is in a PKCS #11 token (audit.pkcs11): rotate to another token key with --to-token and --to-key")
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
	rotate := rotateInDataDir
	if c.Store.URL != "" {
		rotate = rotateOnPostgres
	}
	previous, committed, rerr := rotate(ctx, c, newKey, reason, opts)
	if rerr != nil && !committed {
		os.Remove(nextPath) // nothing was committed under it
		return "", "", rerr
	}
	// Committed: the log names the new key in force, so its file must
	// take the old one's place whatever else failed.
	defer func() {
		if err == nil && rerr != nil {
			err = rerr
		}
	}()
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

// rotateInDataDir appends key.rotated to the log of a data directory,
// whose lock the caller holds. committed says whether the log names next
// in force, even when err says something failed after.
func rotateInDataDir(ctx context.Context, c *config.Config, next ed25519.PrivateKey, reason string, opts audit.Options) (previous string, committed bool, err error) {
	db, log, err := OpenAudit(ctx, c, opts)
	if err != nil {
		if log != nil {
			log.Close()
			db.Close()
		}
		return "", false, err
	}
	defer db.Close()
	return rotateLog(ctx, log, next, reason)
}

// rotateLog hands log to next and closes it.
func rotateLog(ctx context.Context, log *audit.Log, next ed25519.PrivateKey, reason string) (previous string, committed bool, err error) {
	previous = log.PublicKey()
	_, err = log.RotateKey(ctx, next, reason)
	if cerr := log.Close(); err == nil {
		err = cerr
	}
	committed = log.PublicKey() != previous
	if err != nil {
		err = fmt.Errorf("rotate the server key: %w", err)
	}
	return previous, committed, err
}
