// Package pgtest gives tests a real PostgreSQL: a database of their own
// on a server, dropped when the test ends.
//
// The server is $COUNTERSIGN_TEST_PG when set (a postgres:// URL of an
// existing server, with a role that may create databases). Otherwise the
// test binary starts its own cluster, once: initdb into a temporary
// directory (as the postgres user when running as root, since initdb
// refuses root), then pg_ctl start, listening only on a unix socket in
// that directory, never on a TCP port. The binaries come from PATH or
// Debian's /usr/lib/postgresql/NN/bin; without them the test fails,
// saying to install Debian's postgresql package: tests never skip for
// want of a server.
//
// A package whose tests use it stops the cluster from TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		pgtest.Stop()
//		os.Exit(code)
//	}
//
// pgtest imports nothing of Countersign's, so store's own tests can use
// it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// dirPrefix begins the name of each cluster's temporary directory.
const dirPrefix = "cspg"

// EnvURL names the environment variable that points the tests at an
// existing server instead of a cluster of their own.
const EnvURL = "COUNTERSIGN_TEST_PG"

var (
	once    sync.Once
	cluster *server
	failed  error
)

// server is where test databases are made: adminURL connects to a
// database of it that may create others.
type server struct {
	adminURL string
	// Set when this binary started the cluster itself.
	dir, data, pgCtl string
	asPostgres       bool
}

// URL creates an empty database for t and returns its postgres:// URL;
// the database is dropped when t ends (connections still open on it are
// ended first). Any failure fails t.
func URL(t testing.TB) string {
	t.Helper()
	u, drop, err := Database()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return u
}

// Database is URL for programs that are not tests (bench/csbench): it
// creates an empty database on the same server and returns its URL and
// what drops it. The program calls Stop before it exits.
func Database() (dbURL string, drop func() error, err error) {
	once.Do(func() { cluster, failed = start() })
	if failed != nil {
		return "", nil, failed
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cluster.adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to the test server: %w", err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 8)
	rand.Read(b)
	name := "cs_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create a test database: %w", err)
	}
	u, err := url.Parse(cluster.adminURL)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop = func() error {
		admin, err := pgx.Connect(ctx, cluster.adminURL)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// Stop stops the cluster this binary started, if any, and removes its
// directory. A server named by $COUNTERSIGN_TEST_PG is left alone.
func Stop() {
	if cluster == nil || cluster.dir == "" {
		return
	}
	cluster.stop()
	cluster = nil
}

// stop stops the cluster, if it runs, and removes its directory.
func (s *server) stop() {
	if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err == nil {
		if out, err := s.command(s.pgCtl, "-D", s.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: pg_ctl stop: %v\n%s", err, out)
		}
	}
	os.RemoveAll(s.dir)
}

// ownerFile names, in a cluster's directory, the pid of the test binary
// that started it.
const ownerFile = "owner"

// reapOrphans stops the clusters of test binaries that died without
// calling Stop (a test timeout or a panic ends the binary before TestMain
// resumes), so they do not pile up on a shared machine. A cluster whose
// binary still runs is left alone.
func reapOrphans(pgCtl string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		(&server{dir: d, data: filepath.Join(d, "data"), pgCtl: pgCtl, asPostgres: os.Geteuid() == 0}).stop()
	}
}

func start() (*server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &server{adminURL: u}, nil
	}
	bin, err := findBin(debianBins)
	if err != nil {
		return nil, err
	}
	s := &server{pgCtl: filepath.Join(bin, "pg_ctl"), asPostgres: os.Geteuid() == 0}
	reapOrphans(s.pgCtl)
	// A short path: the socket's must fit in 107 bytes.
	if s.dir, err = os.MkdirTemp("", dirPrefix); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	s.data = filepath.Join(s.dir, "data")
	if s.asPostgres {
		if err := chownToPostgres(s.dir); err != nil {
			os.RemoveAll(s.dir)
			return nil, err
		}
	}
	fail := func(step string, err error, out []byte) (*server, error) {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("%s: %v\n%s%s", step, err, out, log)
	}
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", s.data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fail("initdb", err, out)
	}
	// No TCP listener; the socket lives in the cluster's directory, so
	// clusters of concurrent test binaries never meet.
	out, err = s.startServer()
	if err != nil {
		return fail("pg_ctl start", err, out)
	}
	s.adminURL = (&url.URL{Scheme: "postgres", Path: "/postgres",
		RawQuery: url.Values{"host": {s.dir}, "user": {"postgres"}, "sslmode": {"disable"}}.Encode()}).String()
	return s, nil
}

// startServer starts the cluster's server and waits until it accepts
// connections.
func (s *server) startServer() ([]byte, error) {
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -c max_connections=200", s.dir)
	return s.command(s.pgCtl, "-D", s.data, "-l", filepath.Join(s.dir, "log"), "-o", opts, "-w", "start").CombinedOutput()
}

// command runs a PostgreSQL binary as the postgres user when this
// process is root.
func (s *server) command(name string, args ...string) *exec.Cmd {
	if s.asPostgres {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

// debianBins is where Debian's postgresql-NN packages put the server's
// binaries, off PATH.
const debianBins = "/usr/lib/postgresql/*/bin"

// findBin finds the directory of initdb and pg_ctl: PATH first, then
// the directories matching glob (Debian's), newest version first.
func findBin(glob string) (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob(glob)
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; " +
		"install Debian's postgresql package (apt-get install postgresql), or set " + EnvURL + " to a postgres:// URL of a server")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func chownToPostgres(dir string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root, initdb must run as the postgres user: %w (install Debian's postgresql package)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("hand %s to the postgres user: %w", dir, err)
	}
	return nil
}

// Restart restarts the server of this binary's cluster (pg_ctl restart,
// fast: every session is ended, as when an operator restarts it) and
// returns once it accepts connections again. Sessions' locks are gone;
// databases and their rows stay. A server named by $COUNTERSIGN_TEST_PG
// is not this binary's to restart: the test fails.
func Restart(t testing.TB) {
	t.Helper()
	Down(t)()
}

// Down stops the server of this binary's cluster as Restart does, and
// returns what starts it again (and waits until it accepts connections),
// for a test of what happens while it is down. If the test ends without
// calling up, the server is started then, for the tests after it. Any
// failure fails the test.
func Down(t testing.TB) (up func()) {
	t.Helper()
	once.Do(func() { cluster, failed = start() })
	if failed != nil {
		t.Fatalf("pgtest: %v", failed)
	}
	if cluster.dir == "" {
		t.Fatalf("pgtest: stop: the server is %s's, not this test binary's", EnvURL)
	}
	if out, err := cluster.command(cluster.pgCtl, "-D", cluster.data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
	var once sync.Once
	up = func() {
		once.Do(func() {
			if out, err := cluster.startServer(); err != nil {
				t.Errorf("pgtest: pg_ctl start: %v\n%s", err, out)
			}
		})
	}
	t.Cleanup(up)
	return up
}
