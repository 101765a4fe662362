package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// On PostgreSQL backup says whose job it is, and copies nothing.
func TestBackupOnPostgresSaysUsePgDump(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) { c.Store.URL = "postgres://countersign@db.internal/countersign" })
	file := filepath.Join(t.TempDir(), "backup.db")
	_, err := Backup(context.Background(), c, file)
	if !errors.Is(err, ErrBackupPostgres) || !strings.Contains(err.Error(), "pg_dump or pg_basebackup") {
		t.Fatalf("backup on PostgreSQL: %v", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("something was written at %s: %v", file, err)
	}
}

// A copy whose log does not verify is not kept: the error says why, and
// nothing is left at the file's name or beside it.
func TestBackupOfATamperedLogKeepsNothing(t *testing.T) {
	storetest.SQLiteOnly(t, "countersign backup copies the SQLite file")
	ctx := context.Background()
	c := daemontest.Config(t, nil)
	db, log, err := OpenAudit(ctx, c, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := LogPolicy(ctx, log, c); err != nil {
		t.Fatal(err)
	}
	log.Close()
	db.Close()
	raw := storetest.Connect(t, filepath.Join(c.Server.DataDir, store.FileName))
	if _, err := raw.ExecContext(ctx, `UPDATE audit_entries SET body = replace(body, '"policy.loaded"', '"policy.loadeD"') WHERE seq = 1`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.db")
	_, err = Backup(ctx, c, file)
	if err == nil || !strings.Contains(err.Error(), "the copy does not verify, so it was not kept") || !strings.Contains(err.Error(), "seq 1") {
		t.Fatalf("backup of a tampered log: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("left %v in the backup directory", left)
	}
}

// TestBackupOfAnArchivedLog: a log archived and pruned (audit archive)
// backs up; the copy's log passed the startup check from the archive on.
func TestBackupOfAnArchivedLog(t *testing.T) {
	ctx := context.Background()
	c := daemontest.Config(t, nil)
	db, log, err := OpenAudit(ctx, c, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := LogPolicy(ctx, log, c); err != nil {
			t.Fatal(err)
		}
	}
	var archive bytes.Buffer
	cp, err := log.WriteArchive(ctx, &archive, 2)
	if errors.Is(err, audit.ErrArchiveUnsupported) {
		log.Close()
		db.Close()
		t.Skip("archiving and backup are about the SQLite file; this pass runs on PostgreSQL")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.Prune(ctx, audit.Pruning{Checkpoint: cp, ArchiveSHA256: strings.Repeat("0", 64)}); err != nil {
		t.Fatal(err)
	}
	log.Close()
	db.Close()
	res, err := Backup(ctx, c, filepath.Join(t.TempDir(), "backup.db"))
	if err != nil {
		t.Fatalf("backup of an archived log: %v", err)
	}
	if res.ArchivedThrough != 2 {
		t.Fatalf("ArchivedThrough = %d, want 2", res.ArchivedThrough)
	}
}
