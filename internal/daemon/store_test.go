package daemon

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// Until serve is wired to PostgreSQL (the audit log, the replicas'
// recovery), a server given a
// PostgreSQL store.url refuses to start, saying why, without connecting
// or writing anything, and without showing the password.
func TestServeRefusesAPostgresStoreUntilTheAuditLogRunsThere(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) {
		c.Store.URL = "postgres://countersign:s3cret@127.0.0.1:1/countersign"
	})
	_, err := Assemble(context.Background(), c, testOptions(t))
	if err == nil {
		t.Fatal("serve started with its audit log nowhere")
	}
	for _, want := range []string{"store.url", "cannot run on PostgreSQL yet", "127.0.0.1:1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.Server.DataDir, store.FileName)); !os.IsNotExist(err) {
		t.Errorf("a SQLite database was made beside the refused URL: %v", err)
	}
}

// On PostgreSQL the readiness probe takes a write without changing
// anything, and fails on a database that takes none.
func TestDatabaseProbeOnPostgres(t *testing.T) {
	ctx := context.Background()
	target := pgtest.URL(t)
	db := storetest.Connect(t, target)
	if err := db.Migrate(ctx, "probe-test"); err != nil { // makes schema_version
		t.Fatal(err)
	}
	if err := (&dbProbe{db: db}).probe(ctx); err != nil {
		t.Fatalf("probe of a writable database: %v", err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if _, err := db.ExecContext(ctx, `ALTER DATABASE "`+name+`" SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	readOnly := storetest.Connect(t, target) // new sessions take the setting
	err = (&dbProbe{db: readOnly}).probe(ctx)
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("probe of a read-only database: %v", err)
	}
}
