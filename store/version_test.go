package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A database records the schema and the release that raised it there; a
// binary of an older schema refuses it, naming both, and changes nothing.
func TestCheckSchemaRecordsAndRefusesNewer(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		// From before versions were recorded: nothing to refuse.
		if err := db.ReadSchema(ctx, "v0.1.0"); err != nil {
			t.Fatal(err)
		}
		if err := db.CheckSchema(ctx, "v0.1.0"); err != nil {
			t.Fatal(err)
		}
		// A later release of the same schema keeps the record.
		if err := db.CheckSchema(ctx, "v0.1.1"); err != nil {
			t.Fatal(err)
		}
		var schema int
		var release string
		if err := db.QueryRowContext(ctx, `SELECT schema, release FROM schema_release`).Scan(&schema, &release); err != nil {
			t.Fatal(err)
		}
		if schema != store.Schema || release != "v0.1.0" {
			t.Errorf("recorded schema %d by %s, want %d by v0.1.0", schema, release, store.Schema)
		}

		// A newer binary raised it.
		if _, err := db.ExecContext(ctx, `UPDATE schema_release SET schema = ?, release = 'v9.0.0'`, store.Schema+1); err != nil {
			t.Fatal(err)
		}
		for name, check := range map[string]func(context.Context, string) error{"CheckSchema": db.CheckSchema, "ReadSchema": db.ReadSchema} {
			err := check(ctx, "v0.1.1")
			var newer *store.NewerSchemaError
			if !errors.As(err, &newer) {
				t.Fatalf("%s on a newer database: %v", name, err)
			}
			want := fmt.Sprintf("written by version v9.0.0 (schema %d); this is version v0.1.1 (schema %d)", store.Schema+1, store.Schema)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not say %q", name, err, want)
			}
		}
		if err := db.QueryRowContext(ctx, `SELECT schema, release FROM schema_release`).Scan(&schema, &release); err != nil {
			t.Fatal(err)
		}
		if schema != store.Schema+1 || release != "v9.0.0" {
			t.Errorf("the refusal changed the record to schema %d by %s", schema, release)
		}
	})
}

// A package's tables migrated further than this binary knows are refused,
// not taken for up to date.
func TestMigrateRefusesTablesMigratedFurther(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		none := func(context.Context, *sql.Tx, store.Dialect) error { return nil }
		if err := db.Migrate(ctx, "test", none, none); err != nil {
			t.Fatal(err)
		}
		err := db.Migrate(ctx, "test", none)
		if err == nil || !strings.Contains(err.Error(), "changed by a newer version (migration 2; this version knows 1)") {
			t.Fatalf("an older binary's Migrate: %v", err)
		}
	})
}
