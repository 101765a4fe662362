package daemon

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/fulldisk"
	"github.com/countersign/countersign/store/storetest"
)

// /readyz says not ready, and why, while the database cannot take a write
// (here: another process holds its write lock), and ready again after.
func TestReadyzFailsWhenTheDatabaseIsNotWritable(t *testing.T) {
	storetest.SQLiteOnly(t, "another process holds the file's write lock")
	c := daemontest.Config(t, func(c *config.Config) { c.HTTP.Addr = "127.0.0.1:0" })
	d := startDaemon(t, c, testOptions(t))
	page, agentBase := "http://"+d.PageAddr().String(), "http://"+d.AgentAddr().String()
	for _, base := range []string{page, agentBase} {
		if code, body := get(t, base+"/readyz"); code != http.StatusOK || !strings.Contains(body, "ok    database") || !strings.Contains(body, "ok    audit") {
			t.Fatalf("%s/readyz at start: %d\n%s", base, code, body)
		}
	}

	other, err := store.Connect(context.Background(), filepath.Join(c.Server.DataDir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.Begin() // BEGIN IMMEDIATE: the write lock, held
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the probe's one-second reuse
	code, body := get(t, page+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL  database: not writable: database is locked") {
		t.Errorf("/readyz while the database is locked: %d\n%s", code, body)
	}
	if code, _ := get(t, page+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while not ready: %d (the process is alive)", code)
	}
	tx.Rollback()
	time.Sleep(1100 * time.Millisecond)
	if code, body := get(t, agentBase+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the lock is released: %d\n%s", code, body)
	}
}

// /readyz fails while the data directory's disk is full, naming the
// database and the audit log (the probe commits, so it needs the disk; a
// rollback would pass), and is ready again once the disk has room.
func TestReadyzFailsWhileTheDiskIsFull(t *testing.T) {
	storetest.SQLiteOnly(t, "fills the disk the SQLite file is on; PostgreSQL's is the database server's")
	disk := fulldisk.Mount(t, 64<<20)
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "127.0.0.1:0"
		c.Server.DataDir = filepath.Join(disk.Dir, "data")
	})
	d := startDaemon(t, c, testOptions(t))
	page := "http://" + d.PageAddr().String()
	cs := streamable(t, c)
	checkBalance(t, cs)

	disk.Fill(t)
	if res, text := callTool(t, cs, "get_balance", map[string]any{}); !res.IsError {
		t.Fatalf("get_balance on a full disk answered: %s", text)
	}
	time.Sleep(1100 * time.Millisecond) // past the probe's one-second reuse
	code, body := get(t, page+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL  database: not writable") || !strings.Contains(body, "FAIL  audit: cannot be written since") {
		t.Fatalf("/readyz on a full disk: %d\n%s", code, body)
	}

	disk.Release(t)
	daemontest.WaitFor(t, func() bool {
		code, body = get(t, page+"/readyz")
		return code == http.StatusOK
	})
	if !strings.Contains(body, "ok    database") || !strings.Contains(body, "ok    audit") {
		t.Fatalf("/readyz once the disk has room: %d\n%s", code, body)
	}
	checkBalance(t, cs)
	if code, body = get(t, page+"/readyz"); code != http.StatusOK || strings.Contains(body, "appends failed") {
		t.Errorf("/readyz after an append succeeded: %d\n%s", code, body)
	}
}
