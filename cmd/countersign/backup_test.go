package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// waitCalls waits until the agents of l made at least want calls.
func waitCalls(t *testing.T, l *load, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls in 60s, want %d", l.count(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// isPrefix checks that the entries of older are the first of newer, hash
// for hash.
func isPrefix(t *testing.T, older, newer *export) {
	t.Helper()
	if len(newer.entries) < len(older.entries) {
		t.Fatalf("%d entries, fewer than the %d there were before", len(newer.entries), len(older.entries))
	}
	for i, e := range older.entries {
		if newer.entries[i].Hash != e.Hash {
			t.Fatalf("entry %d differs: seq %d %s, was seq %d %s", i, newer.entries[i].Seq, newer.entries[i].Kind, e.Seq, e.Kind)
		}
	}
}

// A backup taken while agents' calls run is one consistent copy that
// verifies. Restored as the README says (stop, replace countersign.db,
// remove -wal and -shm, start), it holds every entry the log had when
// the backup began; the witness file, which saw the entries written
// after it, refuses it as a rollback until the operator accepts the loss
// (serve --accept-rollback); the log then verifies.
func TestBackupUnderLoadVerifiesAndRestores(t *testing.T) {
	storetest.SQLiteOnly(t, "countersign backup copies the SQLite file")
	s := newSite(t, func(c *config.Config) {
		c.Audit.WitnessFile = filepath.Join(t.TempDir(), "witness")
		c.Limits.CallsPerSecond = 1000 // four busy agents, all "anonymous"
	})
	n := s.start()
	l := &load{stop: make(chan struct{}), acked: map[string]bool{}}
	l.start(t, n, 0, 4)
	finish := sync.OnceFunc(l.finish)
	defer finish()
	waitCalls(t, l, 100)

	before := s.exportAndVerify() // every entry here is older than the backup
	file := filepath.Join(t.TempDir(), "countersign-backup.db")
	out := s.cli("backup", file)
	if !strings.Contains(out, "its audit log verifies: OK:") {
		t.Fatalf("backup: %s", out)
	}
	waitCalls(t, l, l.count()+100) // the calls went on, and go on after it
	finish()
	if f := l.failures(); len(f) > 0 {
		t.Fatalf("calls failed under the backup: %v", f)
	}
	if err := s.cliErr("backup", file); err == nil || !strings.Contains(err.Error(), "exists; a backup never overwrites") {
		t.Errorf("a second backup to the same file: %v", err)
	}
	n.term()
	last := s.exportAndVerify()
	if len(last.entries) <= len(before.entries) {
		t.Fatalf("the log did not grow under load: %d entries, %d before the backup", len(last.entries), len(before.entries))
	}

	data := s.cfg.Server.DataDir
	copyFile(t, file, filepath.Join(data, store.FileName))
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(filepath.Join(data, store.FileName+suffix)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	code, stderr := s.secondServe()
	if code == 0 || !strings.Contains(stderr, "audit log rolled back") {
		t.Fatalf("serve on the restored copy under a witness that saw more: exit %d\n%s", code, stderr)
	}
	n = s.startWith([]string{"--accept-rollback"})
	n.term()
	restored := s.exportAndVerify()
	isPrefix(t, before, restored)
	if !hasKind(restored, vocab.KindRollbackAccepted) {
		t.Error("the accepted rollback is not in the log")
	}
	t.Logf("%d entries before the backup, %d at the end, %d after the restore", len(before.entries), len(last.entries), len(restored.entries))
}

func hasKind(ex *export, kind vocab.Kind) bool {
	for _, e := range ex.entries {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// siteAt is s with its data directory at dir: another config file, the
// same settings.
func siteAt(t *testing.T, s *site, dir string) *site {
	t.Helper()
	c := *s.cfg
	c.Server.DataDir = dir
	raw, err := config.Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mcp.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return &site{t: t, cfg: &c, path: path}
}

// copyDir copies the named files of the data directory from to a new
// directory.
func copyDir(t *testing.T, from string, names ...string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range names {
		copyFile(t, filepath.Join(from, name), filepath.Join(to, name))
	}
	return to
}

// dirState is every file of dir with its mode and SHA-256.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	out["."] = fi.Mode().String()
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fmt.Sprintf("%s %x", info.Mode(), sha256.Sum256(b))
	}
	return out
}

// An auditor's copy of the data directory that nobody may write is
// exported and verified whole: a copy taken while serving (its commits
// still in the -wal, read through the -shm copied with it) and one taken
// after a clean stop, each on a read-only mount (which stops root too);
// and a copy made read-only with chmod a-w, which root could write but
// which is left exactly as it was.
func TestAuditExportAndVerifyOnAReadOnlyCopy(t *testing.T) {
	storetest.SQLiteOnly(t, "a read-only copy of the data directory is a copy of the SQLite file")
	s := newSite(t, nil)
	n := s.start()
	cs := n.agent()
	for i := range 5 {
		res := servertest.CallTool(t, cs, "transfer", map[string]any{
			"from": "operating", "to": "Acme Supplies", "amount": 0.01, "currency": "USD", "memo": fmt.Sprint("copy ", i)})
		if res.IsError {
			t.Fatal(servertest.ResultText(res))
		}
	}
	data := s.cfg.Server.DataDir
	atCopy := s.exportAndVerify()
	serving := copyDir(t, data, store.FileName, store.FileName+"-wal", store.FileName+"-shm", "server.key")
	if fi, err := os.Stat(filepath.Join(serving, store.FileName+"-wal")); err != nil || fi.Size() == 0 {
		t.Fatalf("the serving copy has no write-ahead log to read (%v)", err)
	}
	n.term()
	final := s.exportAndVerify()
	stopped := copyDir(t, data, store.FileName, "server.key")

	got := siteAt(t, s, storetest.ReadOnlyView(t, serving)).exportAndVerify()
	isPrefix(t, atCopy, got)
	got = siteAt(t, s, storetest.ReadOnlyView(t, stopped)).exportAndVerify()
	isPrefix(t, final, got)
	if len(got.entries) != len(final.entries) {
		t.Errorf("the stopped copy exports %d entries, the log has %d", len(got.entries), len(final.entries))
	}

	chmodded := copyDir(t, data, store.FileName, "server.key")
	// chmod -R a-w
	for p, mode := range map[string]os.FileMode{
		filepath.Join(chmodded, store.FileName): 0o400, filepath.Join(chmodded, "server.key"): 0o400, chmodded: 0o500,
	} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Chmod(chmodded, 0o700) })
	was := dirState(t, chmodded)
	got = siteAt(t, s, chmodded).exportAndVerify()
	isPrefix(t, final, got)
	if now := dirState(t, chmodded); !maps.Equal(was, now) {
		t.Errorf("exporting changed the chmod a-w copy:\nwas %v\nnow %v", was, now)
	}
}

// A database a newer version wrote (here: this one's, its schema raised
// as a newer version would) is refused by serve and by every command
// that opens it, read-only ones included, naming both versions; it is
// left as it was.
func TestOlderBinaryRefusesANewerDatabase(t *testing.T) {
	storetest.SQLiteOnly(t, "the schema record is edited in the SQLite file")
	s := newSite(t, nil)
	s.cli("audit", "export", "--out", filepath.Join(t.TempDir(), "export.jsonl")) // makes the database
	path := filepath.Join(s.cfg.Server.DataDir, store.FileName)
	db := storetest.Connect(t, path)
	if _, err := db.Exec(`UPDATE schema_release SET schema = ?, release = 'v9.9.9'`, store.Schema+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	want := fmt.Sprintf("the database was written by version v9.9.9 (schema %d); this is version ", store.Schema+1)
	thisOne := fmt.Sprintf(" (schema %d)", store.Schema)

	code, stderr := s.secondServe()
	if code == 0 || !strings.Contains(stderr, want) || !strings.Contains(stderr, thisOne) {
		t.Errorf("serve on a newer database: exit %d\n%s", code, stderr)
	}
	for _, args := range [][]string{
		{"audit", "export"},
		{"approvers", "enroll", "alice"},
		{"backup", filepath.Join(t.TempDir(), "backup.db")},
	} {
		err := s.cliErr(args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("countersign %v on a newer database: %v", args, err)
		}
	}
	ro := siteAt(t, s, storetest.ReadOnlyView(t, s.cfg.Server.DataDir))
	if err := ro.cliErr("audit", "export"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("audit export of a read-only newer database: %v", err)
	}

	db = storetest.Connect(t, path)
	var schema int
	var release string
	if err := db.QueryRow(`SELECT schema, release FROM schema_release`).Scan(&schema, &release); err != nil {
		t.Fatal(err)
	}
	if schema != store.Schema+1 || release != "v9.9.9" {
		t.Errorf("the refusals left schema %d by %s", schema, release)
	}
}
