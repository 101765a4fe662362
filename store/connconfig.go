package store

import "github.com/jackc/pgx/v5"

// ConnConfig is a copy of what db's PostgreSQL connections are made
// with (server, credentials, synchronous_commit), for a package that
// needs a pgx connection of its own, to pipeline (package auditpg's
// writer); nil on SQLite.
func (db *DB) ConnConfig() *pgx.ConnConfig {
	if db.hub.cfg == nil {
		return nil
	}
	return db.hub.cfg.Copy()
}
