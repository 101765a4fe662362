// Package witnesstest runs a real C2SP tlog-witness for tests: torchwood's
// litewitness (a go.mod tool of this module), built from the module cache,
// listening on 127.0.0.1, signing with a throwaway Ed25519 key held by its
// own ssh-agent, as an operator would run it.
//
// It needs ssh-keygen, ssh-agent and ssh-add (Debian: openssh-client;
// scripts/test.sh installs it) and fails the test without them: a witness
// test that silently skipped would prove nothing.
package witnesstest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // litewitness's database, read and set up as witnessctl would
)

// Name is the witness's name in its cosignatures.
const Name = "witness.test/countersign"

// Witness is a running (or stopped) litewitness.
type Witness struct {
	URL  string // the submission prefix: POST URL/add-checkpoint
	VKey string // its cosignature verifier key, as it printed it

	t      *testing.T
	bin    string
	dir    string
	sock   string
	finger string
	addr   string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *syncBuffer
	agent  *exec.Cmd
}

// Start builds litewitness, starts its ssh-agent with a fresh key and
// starts it on a free loopback port. Everything stops when the test ends.
func Start(t *testing.T) *Witness {
	t.Helper()
	for _, tool := range []string{"ssh-keygen", "ssh-agent", "ssh-add"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run litewitness's ssh-agent (Debian: apt-get install openssh-client): %v", tool, err)
		}
	}
	// A short directory: a unix socket path is limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "lw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &Witness{t: t, dir: dir, bin: filepath.Join(dir, "litewitness"), sock: filepath.Join(dir, "agent.sock")}
	build := exec.Command("go", "build", "-o", w.bin, "filippo.io/torchwood/cmd/litewitness")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building litewitness: %v\n%s", err, out)
	}
	key := filepath.Join(dir, "witness.key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "litewitness", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", key+".pub").Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "SHA256:") {
		t.Fatalf("ssh-keygen -l printed %q", out)
	}
	w.finger = fields[1]
	// -D: the agent stays in the foreground, as our child, so the test
	// can end it.
	w.agent = exec.Command("ssh-agent", "-D", "-a", w.sock)
	if err := w.agent.Start(); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	t.Cleanup(func() { w.agent.Process.Kill(); w.agent.Wait() })
	add := func() error {
		cmd := exec.Command("ssh-add", key)
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+w.sock)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ssh-add: %v: %s", err, out)
		}
		return nil
	}
	// The agent's socket appears when it is ready.
	if err := retry(add); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	ln.Close()
	w.URL = "http://" + w.addr
	w.Restart()
	t.Cleanup(w.Stop)
	return w
}

var vkeyRE = regexp.MustCompile(`vkey=(\S+)`)

// Restart starts litewitness again on the same database, key and address.
func (w *Witness) Restart() {
	t := w.t
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd != nil {
		t.Fatal("witnesstest: Restart of a running witness")
	}
	cmd := exec.Command(w.bin, "-name", Name, "-db", filepath.Join(w.dir, "litewitness.db"),
		"-ssh-agent", w.sock, "-key", w.finger, "-listen", w.addr)
	w.stderr = &syncBuffer{}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("litewitness: %v", err)
	}
	w.cmd, w.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(w.exited)
	err := retry(func() error {
		select {
		case <-w.exited:
			return fmt.Errorf("litewitness exited:\n%s", w.stderr.String())
		default:
		}
		resp, err := http.Get(w.URL + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		// litewitness may answer before its log line with the key
		// reaches our buffer: on a loaded machine CI saw an empty one.
		if !vkeyRE.MatchString(w.stderr.String()) {
			return errors.New("listening, but no vkey= line on stderr yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("litewitness did not come up: %v\n%s", err, w.stderr.String())
	}
	m := vkeyRE.FindStringSubmatch(w.stderr.String())
	if m == nil {
		t.Fatalf("litewitness did not print its verifier key:\n%s", w.stderr.String())
	}
	w.VKey = strings.Trim(m[1], `"`)
}

// Stop ends litewitness (SIGKILL: a witness that vanishes); Restart brings
// it back with what it had stored.
func (w *Witness) Stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Kill()
	<-w.exited
	w.cmd = nil
}

// Log is litewitness's stderr so far, for failure messages.
func (w *Witness) Log() string { return w.stderr.String() }

// AddLog registers a log with the witness as witnessctl add-log and
// add-key do: its origin at tree size 0 and its key (the note verifier key
// whose name is the origin). witnessctl itself is not built here: it pulls
// in sigsum-go, which the module proxy does not serve; the rows are the
// same.
func (w *Witness) AddLog(origin, vkey string) {
	t := w.t
	t.Helper()
	db := w.db()
	defer db.Close()
	empty := sha256.Sum256(nil) // the RFC 6962 hash of the empty tree
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO log (origin, tree_size, tree_hash) VALUES (?, 0, ?)`,
		origin, base64.StdEncoding.EncodeToString(empty[:])); err != nil {
		t.Fatalf("adding log %s to litewitness: %v", origin, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO key (origin, key) VALUES (?, ?)`, origin, vkey); err != nil {
		t.Fatalf("adding key of %s to litewitness: %v", origin, err)
	}
}

// db opens litewitness's own database.
func (w *Witness) db() *sql.DB {
	w.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(w.dir, "litewitness.db"))
	if err != nil {
		w.t.Fatal(err)
	}
	return db
}

// Size is the tree size litewitness holds for origin.
func (w *Witness) Size(origin string) int64 {
	t := w.t
	t.Helper()
	db := w.db()
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT tree_size FROM log WHERE origin = ?`, origin).Scan(&n); err != nil {
		t.Fatalf("reading litewitness's log %s: %v", origin, err)
	}
	return n
}

// retry runs f until it succeeds, for at most a minute: processes that
// are starting on a loaded machine.
func retry(f func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
