package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
)

// Owners tells the processes that share one database apart by whether
// they still live. Each process holds an exclusive lock on a small file
// named after its owner id beside the database, for as long as it lives:
// the kernel drops the lock when the process dies, however it dies. An
// owner whose file can be locked is dead. Without a file (an older
// version, or a database in memory) nobody can tell, and callers fall back
// to waiting until what the owner left is old enough.
//
// approval's outbox is the user: entries a dead process left must be
// appended by another exactly once, but a process that is merely slow
// must not have its entries appended twice.
//
// On PostgreSQL (OwnersFor) an owner is a row and a session lock instead
// (owner_pg.go), with the same methods.
type Owners struct {
	dir string // "" for a database in memory: no owner can be told dead
	pg  *pgOwners
}

// OwnerFilePrefix starts the name of every owner's lock file.
const OwnerFilePrefix = ".approval-owner-"

// OwnersOf returns the owners of a SQLite db, kept beside its file. On
// PostgreSQL there is no file: OwnersFor gives the replicas table, and
// OwnersOf owners nobody can tell dead, as with a database in memory.
func OwnersOf(ctx context.Context, db *DB) *Owners {
	if db.dialect == PostgreSQL {
		return &Owners{}
	}
	var file string
	if err := db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil || file == "" {
		return &Owners{}
	}
	return &Owners{dir: filepath.Dir(file)}
}

// Tracked reports whether owners can be told dead at all (the database is
// a file).
func (o *Owners) Tracked() bool { return o.dir != "" || o.pg != nil }

func (o *Owners) path(id string) string { return filepath.Join(o.dir, OwnerFilePrefix+id) }

// Hold takes the liveness lock of owner id, a new id, and returns its
// release. A database in memory needs none: release does nothing.
func (o *Owners) Hold(id string) (release func(), err error) {
	if o.pg != nil {
		return o.pg.hold(id)
	}
	if !o.Tracked() {
		return func() {}, nil
	}
	path := o.path(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err == nil {
		err = lockOwner(f)
	}
	if err != nil {
		if f != nil {
			f.Close()
			os.Remove(path)
		}
		return nil, err
	}
	return func() {
		os.Remove(path) // before the lock goes, so nobody finds it unlocked
		f.Close()
	}, nil
}

// Dead reports whether owner id's process is gone: its lock file exists
// and can be locked (and is then removed). Without a file nobody can tell.
// On PostgreSQL a dead owner is fenced before Dead says so, and stays
// dead (owner_pg.go).
func (o *Owners) Dead(id string) bool {
	if o.pg != nil {
		return o.pg.dead(id)
	}
	if !o.Tracked() {
		return false
	}
	path := o.path(id)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if lockOwner(f) != nil {
		return false
	}
	os.Remove(path)
	return true
}

// Listed returns the ids of the owners that have a lock file, live or
// dead.
func (o *Owners) Listed() []string {
	if o.pg != nil {
		return o.pg.listed()
	}
	if !o.Tracked() {
		return nil
	}
	matches, _ := filepath.Glob(filepath.Join(o.dir, OwnerFilePrefix+"*"))
	ids := make([]string, 0, len(matches))
	for _, m := range matches {
		ids = append(ids, strings.TrimPrefix(filepath.Base(m), OwnerFilePrefix))
	}
	return ids
}

// Fence marks owner id as taken over, so that nothing written for it
// (Unfenced) commits any more and its process, when it runs again,
// stops. Dead fences an owner before it tells it dead; Fence is for a
// caller that decides so on its own. On SQLite, where one process owns
// the database, it does nothing.
func (o *Owners) Fence(ctx context.Context, id string) error {
	if o.pg == nil {
		return nil
	}
	return o.pg.fence(ctx, id)
}

// Forget deletes the row of owner id once it is fenced and settled
// reports, in the transaction that deletes it, that nothing it left still
// needs settling, and says whether it did: the rows of replicas that died
// do not pile up. A live owner is never fenced, so never forgotten; a
// forgotten one stays fenced (Unfenced finds no row), and, unlisted, is
// gone for good. On SQLite, where Dead removes a dead owner's file, it
// does nothing.
func (o *Owners) Forget(ctx context.Context, id string, settled func(ctx context.Context, tx *sql.Tx) (bool, error)) (bool, error) {
	if o.pg == nil {
		return false, nil
	}
	return o.pg.forget(ctx, id, settled)
}

// ForgetCheck is a part of what a forgotten owner leaves (AlsoForget):
// run in the transaction that deletes owner id's row, it deletes what it
// keeps for id if nothing of it still needs settling and says so, or
// reports false to keep id (and its own rows) for a later pass.
type ForgetCheck func(ctx context.Context, tx *sql.Tx, id string) (bool, error)

// AlsoForget has every later Forget run check, after the caller's
// settled, in the same transaction: what other parts keep per owner goes
// with its row, and only when they too have nothing left of it. On
// SQLite, where Forget does nothing, neither does check.
func (o *Owners) AlsoForget(check ForgetCheck) {
	if o.pg == nil {
		return
	}
	o.pg.alsoMu.Lock()
	defer o.pg.alsoMu.Unlock()
	o.pg.also = append(o.pg.also, check)
}

// Unfenced must run in every write transaction made for owner id,
// before its writes: it returns an error wrapping ErrFenced when id was
// fenced (or released), and otherwise keeps id from being fenced until
// tx ends (a share lock on its row), so the write commits before any
// fence or not at all. On SQLite it checks nothing.
func (o *Owners) Unfenced(ctx context.Context, tx *sql.Tx, id string) error {
	if o.pg == nil {
		return nil
	}
	return o.pg.unfenced(ctx, tx, id)
}
