// Package daemontest gives tests what they need to assemble a Countersign:
// the shipped configuration with a private data directory and ephemeral
// listeners, and a logger into the test's log. The daemon's own tests and
// the command's share it.
package daemontest

import (
	"context"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// RepoRoot is the module's root directory, found from this file's path:
// the default configuration's deploy script and secrets are relative to it.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Config is the shipped configuration with a private data directory, an
// approver page on an ephemeral loopback port and short progress
// intervals, its relative paths resolved against [RepoRoot]. edit, if not
// nil, changes it further.
func Config(t testing.TB, edit func(*config.Config)) *config.Config {
	t.Helper()
	c, err := config.Parse(countersign.DefaultConfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	root := RepoRoot()
	c.Server.DataDir = t.TempDir()
	c.Approval.Listen = "127.0.0.1:0"
	c.Deploy.Command[0] = filepath.Join(root, c.Deploy.Command[0])
	c.Secrets.Dir = filepath.Join(root, c.Secrets.Dir)
	c.Approval.ProgressEvery = 200 * time.Millisecond
	if edit != nil {
		edit(c)
	}
	if storetest.Dialect() == store.PostgreSQL && c.Store.URL == "" {
		onPostgres(t, c)
	}
	return c
}

// onPostgres points c at the PostgreSQL database standing in for its
// data directory's file (storetest.Target: configurations sharing a
// data directory share it), as storetest's EnvStore asks, with a server
// key made beforehand in the data directory, as an operator makes one
// with `countersign audit keygen` for every replica.
func onPostgres(t testing.TB, c *config.Config) {
	t.Helper()
	c.Store.URL = storetest.Target(t, filepath.Join(c.Server.DataDir, store.FileName))
	if c.Audit.KeyFile == "" {
		if _, err := audit.LoadOrCreateKey(c.Server.DataDir); err != nil {
			t.Fatal(err)
		}
	}
}

// Logger logs at level and above into the test's log, so a failing test
// shows what the server said.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: level}))
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Entries are the audit log's entries of kind, oldest first.
func Entries(t testing.TB, log *audit.Log, kind vocab.Kind) []audit.Entry {
	t.Helper()
	all, err := log.Since(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range all {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// WaitFor polls cond until it holds, failing the test after 20 seconds.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
