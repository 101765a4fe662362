package pgtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Each test gets an empty database of its own, on a server that listens
// on no TCP port; the database is gone after the test.
func TestURLGivesAPrivateDatabaseOnASocket(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("use", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var listen string
		if err := conn.QueryRow(ctx, "SELECT current_database(), current_setting('listen_addresses')").Scan(&name, &listen); err != nil {
			t.Fatal(err)
		}
		if listen != "" && os.Getenv(EnvURL) == "" {
			t.Errorf("listen_addresses = %q, want none (a unix socket only)", listen)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (v int)"); err != nil {
			t.Fatal(err)
		}
	})
	conn, err := pgx.Connect(ctx, cluster.adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, "SELECT COUNT(*) FROM pg_database WHERE datname = $1", name).Scan(&left); err != nil || left != 0 {
		t.Errorf("database %s after its test: %d (%v)", name, left, err)
	}
}

// Without the server's binaries the tests fail saying what to install.
func TestMissingBinariesSayWhatToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findBin(filepath.Join(t.TempDir(), "*", "bin"))
	if err == nil || !strings.Contains(err.Error(), "install Debian's postgresql package") {
		t.Errorf("findBin = %v", err)
	}
}

// Debian's newest installed version is taken.
func TestFindBinPrefersTheNewestVersion(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	root := t.TempDir()
	for _, v := range []string{"9", "15", "13"} {
		bin := filepath.Join(root, v, "bin")
		os.MkdirAll(bin, 0o755)
		for _, f := range []string{"initdb", "pg_ctl"} {
			if err := os.WriteFile(filepath.Join(bin, f), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := findBin(filepath.Join(root, "*", "bin"))
	if want := filepath.Join(root, "15", "bin"); err != nil || got != want {
		t.Errorf("findBin = %q (%v), want %q", got, err, want)
	}
}

// A cluster whose test binary died is stopped and removed by the next
// binary that starts one.
func TestStartReapsClustersOfDeadBinaries(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		t.Skip("uses a server of its own: " + EnvURL + " names one")
	}
	orphan, err := start()
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.stop()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.dir, ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, orphan.adminURL)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	// This binary's own cluster is not an orphan.
	URL(t)
	reapOrphans(orphan.pgCtl)
	if _, err := os.Stat(orphan.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan's directory is still there: %v", err)
	}
	if _, err := pgx.Connect(ctx, orphan.adminURL); err == nil {
		t.Error("the orphan cluster still accepts connections")
	}
	if _, err := os.Stat(cluster.dir); err != nil {
		t.Errorf("the live binary's cluster was reaped: %v", err)
	}
}

// Restart ends every session and keeps every row.
func TestRestartEndsSessionsAndKeepsData(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		t.Skip("restarts a server of its own: " + EnvURL + " names one")
	}
	ctx := context.Background()
	u := URL(t)
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	Restart(t)
	if err := conn.Ping(ctx); err == nil {
		t.Error("a session from before the restart still answers")
	}
	again, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(ctx)
	var v int
	if err := again.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 7 {
		t.Errorf("row after the restart: %d (%v)", v, err)
	}
}
