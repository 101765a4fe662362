package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// ReadOnlyDataDir reports whether c's data directory is one to read
// without writing anything into it: it exists, on SQLite, and this
// process may not write into it (a read-only mount, an immutable
// directory, its permissions), or it has no write permission at all
// (chmod a-w), which marks a copy as read-only even for root, whom
// permissions do not stop.
func ReadOnlyDataDir(c *config.Config) bool {
	if c.Store.URL != "" {
		return false
	}
	dir := c.Server.DataDir
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	return fi.Mode().Perm()&0o222 == 0 || syscall.Access(dir, 2 /* W_OK */) != nil
}

// OpenAuditReadOnly is OpenAudit for a read-only data directory (see
// ReadOnlyDataDir): it creates, migrates and stores nothing, reads the
// server key that is there, refuses a database of a newer schema, and
// opens the log for reading and export (audit.Options.ReadOnly). A log
// that fails its check comes back with its *audit.TamperError, as from
// OpenAudit.
func OpenAuditReadOnly(ctx context.Context, c *config.Config, opts audit.Options) (*store.DB, *audit.Log, error) {
	key, err := readServerKey(c)
	if err != nil {
		return nil, nil, err
	}
	// A token key's session, if any, lives as long as the process.
	return openLogReadOnly(ctx, filepath.Join(c.Server.DataDir, store.FileName), key, opts)
}

// readServerKey reads the server key without making one: audit.key_file,
// else server.key in the data directory; or the token's (audit.pkcs11).
func readServerKey(c *config.Config) (audit.Signer, error) {
	if c.Audit.PKCS11.Enabled() {
		key, _, err := ServerSigner(c)
		return key, err
	}
	path := c.Audit.KeyFile
	if path == "" {
		path = filepath.Join(c.Server.DataDir, audit.KeyFile)
	}
	key, err := audit.LoadKey(path)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	return key, nil
}

// openLogReadOnly opens the SQLite file at path with store.OpenReadOnly
// and the log in it for reading and export.
func openLogReadOnly(ctx context.Context, path string, key audit.Signer, opts audit.Options) (*store.DB, *audit.Log, error) {
	db, err := store.OpenReadOnly(ctx, path)
	if err != nil {
		return nil, nil, err
	}
	if err := db.ReadSchema(ctx, Release()); err != nil {
		db.Close()
		return nil, nil, err
	}
	opts.ReadOnly = true
	log, err := audit.OpenSigner(ctx, db.DB, key, opts)
	if log == nil {
		db.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	if err != nil {
		return db, log, fmt.Errorf("audit log: %w", err)
	}
	return db, log, nil
}
