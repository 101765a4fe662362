//go:build unix

package store_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// Short enough for tests, long enough that a busy machine does not miss
// a grace's worth of heartbeats.
var testOwners = store.OwnerOptions{Heartbeat: 200 * time.Millisecond, Grace: 3 * time.Second}

func ownersFor(t *testing.T, db *store.DB, opts store.OwnerOptions) *store.Owners {
	t.Helper()
	owners, err := store.OwnersFor(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return owners
}

func hold(t *testing.T, owners *store.Owners, id string) func() {
	t.Helper()
	release, err := owners.Hold(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return release
}

// eventually polls cond until it holds, failing the test after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// write is a write made for owner, guarded by its fence.
func write(ctx context.Context, db *store.DB, owners *store.Owners, owner string) error {
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if err := owners.Unfenced(ctx, tx, owner); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO writes (owner) VALUES (?)`, owner)
		return err
	})
}

// backend is the pid of the session whose application_name is app, on
// db's database, or 0.
func backend(t *testing.T, db *store.DB, app string) int {
	t.Helper()
	var pid int
	err := db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ?`, app).Scan(&pid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return pid
}

func terminate(t *testing.T, db *store.DB, pid int) {
	t.Helper()
	var ok bool
	if err := db.QueryRow(`SELECT pg_terminate_backend(?)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate backend %d: %v %v", pid, ok, err)
	}
}

// Two replicas on one database: each sees the other alive while it
// holds its id, an id is held once, a write for a live owner commits,
// and a released owner leaves no row.
func TestOwnersOnPostgreSQLTellTheLiving(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	onA, onB := ownersFor(t, a, testOwners), ownersFor(t, b, testOwners)
	if !onA.Tracked() {
		t.Fatal("owners on PostgreSQL are not tracked")
	}
	releaseA := hold(t, onA, "a")
	hold(t, onB, "b")
	if _, err := onB.Hold("a"); err == nil {
		t.Error("a second Hold of one owner id succeeded")
	}
	if got := onA.Listed(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("listed %v, want a and b", got)
	}
	if onB.Dead("a") || onA.Dead("b") || onA.Dead("never-seen") {
		t.Error("a live (or unknown) owner was told dead")
	}
	if err := write(ctx, b, onB, "a"); err != nil {
		t.Errorf("a write for a live owner: %v", err)
	}
	releaseA()
	if got := onB.Listed(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("listed after a's release %v, want b", got)
	}
	if err := write(ctx, b, onB, "a"); !errors.Is(err, store.ErrFenced) {
		t.Errorf("a write for a released owner: %v, want ErrFenced", err)
	}
	if _, err := store.OwnersFor(ctx, a, store.OwnerOptions{Heartbeat: time.Second, Grace: time.Second}); err == nil {
		t.Error("a grace shorter than two heartbeats was accepted")
	}
}

// SQLite keeps its lock files: OwnersFor gives what OwnersOf gives, and
// fencing, which one process never needs, does nothing.
func TestOwnersForSQLiteAreLockFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	exec(t, db, `CREATE TABLE writes (owner TEXT)`)
	owners := ownersFor(t, db, store.OwnerOptions{OnFenced: func(string) { t.Error("fenced on SQLite") }})
	hold(t, owners, "live")
	if _, err := os.Stat(filepath.Join(dir, store.OwnerFilePrefix+"live")); err != nil {
		t.Errorf("no lock file: %v", err)
	}
	if err := owners.Fence(ctx, "live"); err != nil {
		t.Error(err)
	}
	if err := write(ctx, db, owners, "live"); err != nil {
		t.Errorf("a write on SQLite: %v", err)
	}
}

// A replica whose lock connection is cut (but not fenced) takes its lock
// again and lives on; nobody finds it dead, even past a grace.
func TestOwnerSurvivesLosingItsLockConnection(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	var fenced atomic.Bool
	opts := testOwners
	opts.OnFenced = func(string) { fenced.Store(true) }
	onA, onB := ownersFor(t, a, opts), ownersFor(t, b, testOwners)
	hold(t, onA, "a")
	app := store.OwnerApplicationName + " a"
	first := backend(t, b, app)
	if first == 0 {
		t.Fatal("no lock connection")
	}
	terminate(t, b, first)
	eventually(t, "holding the lock again", func() bool {
		pid := backend(t, b, app)
		return pid != 0 && pid != first
	})
	time.Sleep(testOwners.Grace + time.Second)
	if onB.Dead("a") {
		t.Error("an owner that took its lock again was told dead")
	}
	if fenced.Load() {
		t.Error("an owner that was not fenced was told so")
	}
	if err := write(ctx, a, onA, "a"); err != nil {
		t.Errorf("a write for the owner: %v", err)
	}
}

// A PostgreSQL restart drops every lock at once: nobody is told dead,
// both replicas take their locks back, and leadership is taken again.
func TestRestartReapsNobody(t *testing.T) {
	if os.Getenv(pgtest.EnvURL) != "" {
		t.Skip("restarts a server of its own: " + pgtest.EnvURL + " names one")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	var fenced atomic.Int32
	opts := store.OwnerOptions{Heartbeat: 200 * time.Millisecond, Grace: 5 * time.Second,
		OnFenced: func(string) { fenced.Add(1) }}
	onA, onB := ownersFor(t, a, opts), ownersFor(t, b, opts)
	hold(t, onA, "a")
	hold(t, onB, "b")
	var terms atomic.Int32
	leading := make(chan struct{}, 8)
	for _, db := range []*store.DB{a, b} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			db.Lead(ctx, "restart", func(ctx context.Context) {
				leading <- struct{}{}
				<-ctx.Done()
				terms.Add(1)
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	<-leading

	// Probe all along: while the server is down, and while the locks
	// are free before the replicas take them back.
	var reaped atomic.Bool
	probing, probed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-probing:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if onA.Dead("b") || onB.Dead("a") {
				reaped.Store(true)
			}
		}
	}()
	pgtest.Restart(t)
	select {
	case <-leading:
	case <-time.After(wait):
		t.Fatal("nobody leads after the restart")
	}
	eventually(t, "the term the restart cut ended", func() bool { return terms.Load() == 1 })
	for _, app := range []string{store.OwnerApplicationName + " a", store.OwnerApplicationName + " b"} {
		eventually(t, app+" connected again", func() bool {
			var pid int
			a.QueryRow(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ?`, app).Scan(&pid)
			return pid != 0
		})
	}
	// Through and past a grace: always alive.
	time.Sleep(opts.Grace + time.Second)
	close(probing)
	<-probed
	if reaped.Load() {
		t.Fatal("a replica was told dead after a PostgreSQL restart")
	}
	if fenced.Load() != 0 {
		t.Error("a replica was fenced by a PostgreSQL restart")
	}
	if err := write(ctx, a, onA, "a"); err != nil {
		t.Errorf("a write after the restart: %v", err)
	}
}

// Child processes: the test binary run again with childRole set.
const (
	childRole = "COUNTERSIGN_STORE_TEST_CHILD"
	childURL  = "COUNTERSIGN_STORE_TEST_URL"
)

// TestChildReplica is not a test: it is the replica a test runs in a
// child process, to kill or stop it. It prints what it did, a line at a
// time, and waits to be killed.
func TestChildReplica(t *testing.T) {
	role := os.Getenv(childRole)
	if role == "" {
		return
	}
	ctx := context.Background()
	db, err := store.Connect(ctx, os.Getenv(childURL))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	switch role {
	case "owner":
		fenced := make(chan string, 1)
		opts := testOwners
		opts.OnFenced = func(id string) { fenced <- id }
		owners, err := store.OwnersFor(ctx, db, opts)
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		if _, err := owners.Hold("child"); err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Println("held")
		id := <-fenced
		fmt.Println("fenced", id)
		err = write(ctx, db, owners, id)
		fmt.Printf("write fenced=%v: %v\n", errors.Is(err, store.ErrFenced), err)
	case "leader":
		db.Lead(ctx, "child", func(ctx context.Context) {
			fmt.Println("leading")
			<-ctx.Done()
		})
	}
	select {}
}

// child is a replica in a process of its own.
type child struct {
	cmd   *osexec.Cmd
	lines chan string
}

func startChild(t *testing.T, role, url string) *child {
	t.Helper()
	cmd := osexec.Command(os.Args[0], "-test.run=^TestChildReplica$", "-test.count=1")
	cmd.Env = append(os.Environ(), childRole+"="+role, childURL+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c
}

// expect waits for the child's next line and fails unless it starts
// with prefix.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok || !strings.HasPrefix(line, prefix) {
			t.Fatalf("child said %q (open %v), want %q...", line, ok, prefix)
		}
		return line
	case <-time.After(wait):
		t.Fatalf("child did not say %q within %v", prefix, wait)
	}
	return ""
}

func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// A killed replica is dead only once a grace has passed since its last
// heartbeat, and telling it dead fences it.
func TestKilledOwnerIsDeadAfterTheGrace(t *testing.T) {
	u := pgtest.URL(t)
	db := storetest.Connect(t, u)
	owners := ownersFor(t, db, testOwners)
	c := startChild(t, "owner", u)
	c.expect(t, "held")
	c.signal(t, syscall.SIGKILL)
	c.cmd.Wait()
	killed := time.Now()
	// The lock is free at once, but the heartbeat is recent (a busy
	// machine may have delayed it, hence only half a grace).
	if owners.Dead("child") && time.Since(killed) < testOwners.Grace/2 {
		t.Error("a killed owner was told dead before its grace passed")
	}
	eventually(t, "dead", func() bool { return owners.Dead("child") })
	var fenced bool
	if err := db.QueryRow(`SELECT fenced FROM replicas WHERE id = 'child'`).Scan(&fenced); err != nil || !fenced {
		t.Errorf("the dead owner's row: fenced %v (%v)", fenced, err)
	}
	if !owners.Dead("child") {
		t.Error("a fenced owner was told alive the second time")
	}
}

// A replica paused past the grace loses its lock (the server ends its
// idle session) and is found dead and fenced; when it runs again it
// learns it was fenced, and its write commits nothing.
func TestPausedOwnerWakesFenced(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	db := storetest.Connect(t, u)
	exec(t, db, `CREATE TABLE writes (owner TEXT)`)
	owners := ownersFor(t, db, testOwners)
	c := startChild(t, "owner", u)
	c.expect(t, "held")
	c.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	eventually(t, "dead", func() bool { return owners.Dead("child") })
	if since := time.Since(stopped); since < testOwners.Grace/2 {
		t.Errorf("a paused owner was told dead %v after it stopped, before its grace", since)
	}
	// The reaper would act for it now.
	if err := write(ctx, db, owners, "child"); !errors.Is(err, store.ErrFenced) {
		t.Errorf("a write for the fenced owner: %v, want ErrFenced", err)
	}
	c.signal(t, syscall.SIGCONT)
	c.expect(t, "fenced child")
	c.expect(t, "write fenced=true")
	if n := count(t, db, "writes"); n != 0 {
		t.Errorf("%d writes committed for a fenced owner", n)
	}
}

// A fence waits for a write already made for the owner (it holds the
// owner's row), then lands; the holder hears of it, and later writes for
// the owner fail.
func TestFenceWaitsForWritesInFlightAndStopsTheHolder(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	told := make(chan string, 1)
	opts := testOwners
	opts.OnFenced = func(id string) { told <- id }
	onA, onB := ownersFor(t, a, opts), ownersFor(t, b, testOwners)
	hold(t, onA, "a")

	checked, proceed, wrote := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		wrote <- a.InTx(ctx, func(tx *sql.Tx) error {
			if err := onA.Unfenced(ctx, tx, "a"); err != nil {
				return err
			}
			close(checked)
			<-proceed
			_, err := tx.ExecContext(ctx, `INSERT INTO writes (owner) VALUES ('a')`)
			return err
		})
	}()
	<-checked
	fenced := make(chan error, 1)
	go func() { fenced <- onB.Fence(ctx, "a") }()
	eventually(t, "the fence waiting for the write", func() bool {
		var n int
		b.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return n == 1
	})
	close(proceed)
	if err := <-wrote; err != nil {
		t.Fatalf("the write in flight: %v", err)
	}
	if err := <-fenced; err != nil {
		t.Fatal(err)
	}
	if n := count(t, b, "writes"); n != 1 {
		t.Errorf("%d writes, want the one in flight", n)
	}
	select {
	case id := <-told:
		if id != "a" {
			t.Errorf("OnFenced(%q), want a", id)
		}
	case <-time.After(wait):
		t.Fatal("the holder was not told it was fenced")
	}
	if err := write(ctx, a, onA, "a"); !errors.Is(err, store.ErrFenced) {
		t.Errorf("a write after the fence: %v, want ErrFenced", err)
	}
	if !onB.Dead("a") {
		t.Error("a fenced owner was not told dead")
	}
}

// A fence that commits after a write's transaction began, but before it
// checked the owner, makes the check conflict; run again, the write sees
// the fence and commits nothing.
func TestFenceAfterTheSnapshotIsSeenOnRetry(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	onA, onB := ownersFor(t, a, testOwners), ownersFor(t, b, testOwners)
	hold(t, onA, "a")
	attempts := 0
	err := a.InTx(ctx, func(tx *sql.Tx) error {
		attempts++
		if attempts == 1 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM writes`).Scan(&n); err != nil { // takes the snapshot
				return err
			}
			if err := onB.Fence(ctx, "a"); err != nil {
				return err
			}
		}
		if err := onA.Unfenced(ctx, tx, "a"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO writes (owner) VALUES ('a')`)
		return err
	})
	if !errors.Is(err, store.ErrFenced) || attempts != 2 {
		t.Errorf("after %d attempts: %v, want ErrFenced on the second", attempts, err)
	}
	if n := count(t, a, "writes"); n != 0 {
		t.Errorf("%d writes committed for a fenced owner", n)
	}
}

// After an outage longer than the grace every row is stale and every
// lock free, until the replicas reconnect: nobody is reaped meanwhile.
func TestLongOutageReapsNobody(t *testing.T) {
	if os.Getenv(pgtest.EnvURL) != "" {
		t.Skip("stops a server of its own: " + pgtest.EnvURL + " names one")
	}
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	var fenced atomic.Int32
	opts := testOwners
	opts.OnFenced = func(string) { fenced.Add(1) }
	onA, onB := ownersFor(t, a, opts), ownersFor(t, b, opts)
	hold(t, onA, "a")
	hold(t, onB, "b")
	up := pgtest.Down(t)
	time.Sleep(opts.Grace + time.Second)
	var reaped atomic.Bool
	probing, probed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-probing:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if onA.Dead("b") || onB.Dead("a") {
				reaped.Store(true)
			}
		}
	}()
	up()
	for _, app := range []string{store.OwnerApplicationName + " a", store.OwnerApplicationName + " b"} {
		eventually(t, app+" connected again", func() bool {
			var pid int
			a.QueryRow(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ?`, app).Scan(&pid)
			return pid != 0
		})
	}
	time.Sleep(opts.Grace + time.Second)
	close(probing)
	<-probed
	if reaped.Load() || fenced.Load() != 0 {
		t.Fatalf("a replica was told dead (%v) or fenced (%d) after a long outage", reaped.Load(), fenced.Load())
	}
	if err := write(ctx, a, onA, "a"); err != nil {
		t.Errorf("a write after the outage: %v", err)
	}
}

// Forget deletes a fenced owner's row only when the caller's check, run
// in the deleting transaction, finds it settled; a live owner's row
// stays whatever the check says, and a forgotten owner stays fenced. On
// SQLite it forgets nothing.
func TestForgetDeletesOnlyFencedSettledOwners(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	exec(t, a, `CREATE TABLE writes (owner TEXT)`)
	onA, onB := ownersFor(t, a, testOwners), ownersFor(t, b, testOwners)
	releaseA := hold(t, onA, "a")
	hold(t, onB, "b")
	left := map[string]bool{"a": true} // what each owner still has to be settled
	settled := func(id string) func(context.Context, *sql.Tx) (bool, error) {
		return func(ctx context.Context, tx *sql.Tx) (bool, error) {
			var n int
			err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM replicas WHERE id = ?`, id).Scan(&n) // reads in tx
			return err == nil && n == 1 && !left[id], err
		}
	}
	if gone, err := onB.Forget(ctx, "a", settled("a")); err != nil || gone {
		t.Fatalf("forget a live owner: %v, %v", gone, err)
	}
	if err := onB.Fence(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	releaseA() // a fenced row outlives its holder
	if gone, err := onB.Forget(ctx, "a", settled("a")); err != nil || gone {
		t.Fatalf("forget a fenced owner with work left: %v, %v", gone, err)
	}
	left["a"] = false
	if gone, err := onB.Forget(ctx, "b", settled("b")); err != nil || gone {
		t.Fatalf("forget the live owner b, settled: %v, %v", gone, err)
	}
	if gone, err := onB.Forget(ctx, "a", settled("a")); err != nil || !gone {
		t.Fatalf("forget a fenced, settled owner: %v, %v", gone, err)
	}
	if got := onB.Listed(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("listed %v after forgetting a, want b", got)
	}
	if err := write(ctx, b, onB, "a"); !errors.Is(err, store.ErrFenced) {
		t.Errorf("a write for a forgotten owner: %v, want ErrFenced", err)
	}
	if gone, err := onB.Forget(ctx, "a", settled("a")); err != nil || gone {
		t.Errorf("forget a forgotten owner again: %v, %v", gone, err)
	}

	lite := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	owners := ownersFor(t, lite, store.OwnerOptions{})
	hold(t, owners, "live")
	if gone, err := owners.Forget(ctx, "live", func(context.Context, *sql.Tx) (bool, error) { return true, nil }); err != nil || gone {
		t.Errorf("SQLite forgot an owner: %v, %v", gone, err)
	}
}
