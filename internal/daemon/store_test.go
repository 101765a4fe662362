package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness"
)

// On PostgreSQL a replica never makes a signing key of its own: with no
// key file it refuses to start, saying how to make one, and writes none.
func TestReplicaOnPostgresNeverMakesAKey(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) { c.Store.URL = pgtest.URL(t) })
	s, err := Assemble(context.Background(), c, testOptions(t))
	if err == nil {
		s.Close()
		t.Fatal("a replica started without a key file")
	}
	if !strings.Contains(err.Error(), "countersign audit keygen") {
		t.Errorf("error %q does not say how to make the key", err)
	}
	if _, err := os.Stat(filepath.Join(c.Server.DataDir, audit.KeyFile)); !os.IsNotExist(err) {
		t.Errorf("a key was made in the data directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.Server.DataDir, store.FileName)); !os.IsNotExist(err) {
		t.Errorf("a SQLite database was made beside store.url: %v", err)
	}
}

// Replicas of one database sign with one key: the first records its
// public key, one with the same key file joins, one with another key is
// refused with both keys named. The result key derived from the server
// key is then the same on each, so a result sealed on one opens on the
// other.
func TestReplicasOnPostgresShareOneKey(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	shared := filepath.Join(t.TempDir(), "server.key")
	key, err := audit.WriteNewKey(shared)
	if err != nil {
		t.Fatal(err)
	}
	replica := func(keyFile string) *config.Config {
		return daemontest.Config(t, func(c *config.Config) { c.Store.URL, c.Audit.KeyFile = url, keyFile })
	}
	a, err := Assemble(ctx, replica(shared), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cb := replica(shared)
	b, err := Assemble(ctx, cb, testOptions(t))
	if err != nil {
		t.Fatalf("a second replica with the same key: %v", err)
	}
	defer b.Close()
	ka, _ := resultKey(a.Config())
	kb, _ := resultKey(cb)
	if !bytes.Equal(ka, kb) {
		t.Error("the replicas derive different result keys")
	}

	other := filepath.Join(t.TempDir(), "other.key")
	otherKey, err := audit.WriteNewKey(other)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Assemble(ctx, replica(other), testOptions(t))
	if err == nil {
		c.Close()
		t.Fatal("a replica with another key started")
	}
	for _, k := range []ed25519.PrivateKey{key, otherKey} {
		if pub := audit.PublicKeyText(k.Public().(ed25519.PublicKey)); !strings.Contains(err.Error(), pub) {
			t.Errorf("refusal %q does not name %s", err, pub)
		}
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

// A replica its peers fence (they found it dead and act for it) stops
// serving on its own, and Run says why: the command exits non-zero.
func TestFencedReplicaStops(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	keyFile := filepath.Join(t.TempDir(), "server.key")
	if _, err := audit.WriteNewKey(keyFile); err != nil {
		t.Fatal(err)
	}
	c := daemontest.Config(t, func(c *config.Config) {
		c.Store.URL, c.Audit.KeyFile, c.HTTP.Addr = url, keyFile, "127.0.0.1:0"
	})
	d, err := Open(ctx, c, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	peers, err := store.OwnersFor(ctx, storetest.Connect(t, url), store.OwnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := peers.Fence(ctx, d.Stack().owner); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "fenced") {
			t.Fatalf("Run of a fenced replica returned %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a fenced replica still serves a minute later")
	}
}

// Only the replica that leads gives the witness the final checkpoint at
// shutdown; the others leave the witness alone.
func TestOnlyTheLeaderGivesTheWitnessTheFinalCheckpoint(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	keyFile := filepath.Join(t.TempDir(), "server.key")
	if _, err := audit.WriteNewKey(keyFile); err != nil {
		t.Fatal(err)
	}
	replica := func() (*Stack, *witness.File) {
		c := daemontest.Config(t, func(c *config.Config) {
			c.Store.URL, c.Audit.KeyFile = url, keyFile
			c.Audit.WitnessFile = filepath.Join(t.TempDir(), "witness")
		})
		s, err := Assemble(ctx, c, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		_, v, err := audit.ParsePublicKey(s.Audit().PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		return s, &witness.File{Path: c.Audit.WitnessFile, Verifier: v}
	}
	a, wa := replica()
	daemontest.WaitFor(t, func() bool { return a.leading.Load() })
	b, wb := replica()
	if b.leading.Load() {
		t.Fatal("both replicas lead")
	}
	if _, err := b.Audit().Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Agent: "test", Tool: "get_balance"}); err != nil {
		t.Fatal(err)
	}
	size := func(w *witness.File) int64 {
		cp, err := w.Latest()
		if err != nil || cp == nil {
			t.Fatalf("witness %s: %v %v", w.Path, cp, err)
		}
		return cp.Size
	}
	before := size(wb)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := size(wb); got != before {
		t.Errorf("the follower's witness moved from %d to %d at its shutdown", before, got)
	}
	var last int64
	if err := storetest.Connect(t, url).QueryRowContext(ctx, `SELECT MAX(seq) FROM audit_entries`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if got := size(wa); got != last {
		t.Errorf("the leader's witness holds size %d at shutdown, want the whole log, %d", got, last)
	}
}
