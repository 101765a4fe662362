package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// ErrBackupPostgres is Backup's answer on PostgreSQL: its own tools copy
// a database consistently while replicas write, and this one would only
// pretend to.
var ErrBackupPostgres = errors.New("the database is PostgreSQL (store.url): back it up with pg_dump or pg_basebackup " +
	"(README: Back up, restore, upgrade); countersign backup copies the SQLite database of a data directory")

// BackupResult says what a backup holds, as verified.
type BackupResult struct {
	File   string
	Bytes  int64
	Schema int            // the database's schema (store.Schema when this binary wrote it)
	Log    verify.Summary // the copy's audit log, exported and verified offline
	// ArchivedThrough: the log was archived (audit archive) through this
	// seq. Its export starts after the archive and verifies only with it,
	// which the backup does not have: Log is then zero and the copy's log
	// passed the startup check (every stored hash, link, the tree from the
	// archive's checkpoint on, the latest checkpoint).
	ArchivedThrough int64
}

// Backup copies c's SQLite database to file while a server may be
// serving on it, then verifies the copy before it takes file's name. The
// copy is one consistent snapshot (SQLite's VACUUM INTO, in a read
// transaction: writers go on meanwhile) holding everything committed
// when it began, the write-ahead log's commits included, in one file
// without a -wal. Verifying opens the copy read-only, checks its audit
// log as a start would (chain, tree, checkpoint) and SQLite's structure
// (quick_check), and checks an export of its log as `audit verify` does,
// with the server's public key. file is never overwritten; nothing is
// left at its name unless the copy verified. Nothing is written in the
// data directory.
func Backup(ctx context.Context, c *config.Config, file string) (*BackupResult, error) {
	if c.Store.URL != "" {
		return nil, ErrBackupPostgres
	}
	if _, err := os.Lstat(file); err == nil {
		return nil, fmt.Errorf("%s exists; a backup never overwrites a file: choose another name", file)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := readServerKey(c)
	if err != nil {
		return nil, err
	}
	src, err := store.OpenReadOnly(ctx, filepath.Join(c.Server.DataDir, store.FileName))
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if err := src.ReadSchema(ctx, Release()); err != nil {
		return nil, err
	}
	// VACUUM INTO takes an empty file: made here, beside file, so the
	// final link is on one file system.
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if _, err := src.ExecContext(ctx, `VACUUM INTO ?`, tmp.Name()); err != nil {
		return nil, fmt.Errorf("backup: copy the database: %w", err)
	}
	res, err := verifyBackup(ctx, tmp.Name(), key)
	if err != nil {
		return nil, fmt.Errorf("backup: the copy does not verify, so it was not kept: %w", err)
	}
	// A link, not a rename: it fails if file appeared meanwhile.
	if err := os.Link(tmp.Name(), file); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	res.File = file
	return res, nil
}

// verifyBackup checks the database file at path (see Backup).
func verifyBackup(ctx context.Context, path string, key audit.Signer) (*BackupResult, error) {
	db, log, err := openLogReadOnly(ctx, path, key, audit.Options{})
	if err != nil {
		if log != nil {
			log.Close()
			db.Close()
		}
		return nil, err
	}
	defer db.Close()
	defer log.Close()
	var check string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&check); err != nil {
		return nil, err
	}
	if check != "ok" {
		return nil, fmt.Errorf("SQLite's quick_check: %s", check)
	}
	schema, err := db.Schema(ctx)
	if err != nil {
		return nil, err
	}
	if through, err := log.PrunedThrough(ctx); err != nil {
		return nil, err
	} else if through > 0 {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		return &BackupResult{Bytes: fi.Size(), Schema: schema.Schema, ArchivedThrough: through}, nil
	}
	r, w := io.Pipe()
	exported := make(chan struct{})
	go func() {
		defer close(exported)
		w.CloseWithError(log.Export(ctx, w, 0))
	}()
	sum, err := verify.Export(r, log.PublicKey(), verify.Options{})
	r.CloseWithError(io.ErrClosedPipe) // stops the export if verify gave up early
	<-exported
	if err != nil {
		return nil, fmt.Errorf("audit verify of its log: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	return &BackupResult{Bytes: fi.Size(), Schema: schema.Schema, Log: sum}, nil
}
