package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Schema is the version of the database this binary writes, one number
// for everything in it. Raise it by one, with a line below, with every
// change a binary of the schema before would misread or refuse: a
// migration (DB.Migrate), a table or column it would need, a new audit
// entry format (audit.Format). CheckSchema then keeps older binaries off
// databases a newer one has written.
//
//	0  before versions were recorded
//	1  the database records its schema (schema_release); audit entry
//	   format 3; each package's migrations counted in schema_version
//	2  approval_pending counts the requests waiting (approval migration
//	   5): an older binary would leave the counts behind, and the caps
//	   would then refuse or allow wrongly
const Schema = 2

// schemaReleaseDDL records the database's schema and the release of the
// binary that raised it there, for the message an older binary gives.
const schemaReleaseDDL = `CREATE TABLE IF NOT EXISTS schema_release (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	schema  INTEGER NOT NULL,
	release TEXT NOT NULL,
	raised  TEXT NOT NULL
) STRICT`

// NewerSchemaError says the database was written by a newer binary than
// this one: this one must not start on it, nor read it.
type NewerSchemaError struct {
	WrittenBy string // the release that raised the database to Schema
	Schema    int
	This      string // this binary's release
	ThisOne   int    // this binary's schema
}

func (e *NewerSchemaError) Error() string {
	return fmt.Sprintf("the database was written by version %s (schema %d); this is version %s (schema %d): "+
		"an older version cannot use a newer database. Run %s or later, or restore a backup taken before the upgrade",
		e.WrittenBy, e.Schema, e.This, e.ThisOne, e.WrittenBy)
}

// CheckSchema refuses, with a *NewerSchemaError, a database whose schema
// is newer than this binary's, and raises an older one to Schema,
// recording release (this binary's release version) as the one that
// raised it. It runs before any table is created or migrated, so a newer
// database is left as it is; and it raises the schema before the
// migrations run, so an older binary refuses a database a newer one has
// only begun to change. Databases from before versions were recorded
// are schema 0.
func (db *DB) CheckSchema(ctx context.Context, release string) error {
	// Read first: a database at this schema (every start but the first
	// of a release) needs no write, so no lock beside a running server.
	s, err := db.Schema(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("store: schema version: %w", err)
	case s.Schema > Schema:
		return s.newer(release)
	case s.Schema == Schema:
		return nil
	}
	if err := db.CreateTables(ctx, schemaReleaseDDL); err != nil {
		return fmt.Errorf("store: schema version: %w", err)
	}
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if db.dialect == PostgreSQL {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(migrateLock)); err != nil {
				return err
			}
		}
		cur, err := readSchema(ctx, tx)
		switch {
		case err != nil:
			return fmt.Errorf("store: schema version: %w", err)
		case cur.Schema > Schema: // a newer binary raised it meanwhile
			return cur.newer(release)
		case cur.Schema == Schema:
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO schema_release (id, schema, release, raised) VALUES (1, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET schema = excluded.schema, release = excluded.release, raised = excluded.raised`,
			Schema, release, time.Now().UTC().Format(time.RFC3339))
		if err != nil {
			return fmt.Errorf("store: schema version: %w", err)
		}
		return nil
	})
}

// DatabaseSchema is what a database records of its schema.
type DatabaseSchema struct {
	Schema    int    // 0: from before versions were recorded
	WrittenBy string // the release that raised it to Schema
}

// newer is the refusal of s by this binary, of release.
func (s DatabaseSchema) newer(release string) error {
	return &NewerSchemaError{WrittenBy: s.WrittenBy, Schema: s.Schema, This: release, ThisOne: Schema}
}

func readSchema(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (DatabaseSchema, error) {
	var s DatabaseSchema
	err := q.QueryRowContext(ctx, `SELECT schema, release FROM schema_release WHERE id = 1`).Scan(&s.Schema, &s.WrittenBy)
	if errors.Is(err, sql.ErrNoRows) {
		return DatabaseSchema{}, nil
	}
	return s, err
}

// ReadSchema is CheckSchema for a database this process only reads (a
// read-only copy, a backup): it changes nothing, and refuses a newer
// schema with a *NewerSchemaError. A database without the record is
// from before versions were recorded.
func (db *DB) ReadSchema(ctx context.Context, release string) error {
	s, err := db.Schema(ctx)
	if err != nil {
		return fmt.Errorf("store: schema version: %w", err)
	}
	if s.Schema > Schema {
		return s.newer(release)
	}
	return nil
}

// Schema reads what db records of its schema; the zero DatabaseSchema
// for a database from before versions were recorded.
func (db *DB) Schema(ctx context.Context) (DatabaseSchema, error) {
	var n int
	q := `SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_release'`
	if db.dialect == PostgreSQL {
		q = `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_release'`
	}
	if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil || n == 0 {
		return DatabaseSchema{}, err
	}
	return readSchema(ctx, db)
}
