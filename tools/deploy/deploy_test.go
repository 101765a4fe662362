package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable sh script into a temp dir and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deploy-test.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func runner(t *testing.T, o Options) *Runner {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	if o.MaxOutputBytes == 0 {
		o.MaxOutputBytes = 64 << 10
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPlaceholdersReplacedPerArgument(t *testing.T) {
	prog := script(t, `for a in "$@"; do printf '<%s>\n' "$a"; done`)
	r := runner(t, Options{Command: []string{prog, "--service={service}", "{version}", "{environment}/{service}", "{unknown}"}})
	target := Target{Service: "api", Version: "1.2.3-{environment}", Environment: "production"}
	want := []string{prog, "--service=api", "1.2.3-{environment}", "production/api", "{unknown}"}
	if got := r.Argv(target); !slices.Equal(got, want) {
		t.Errorf("Argv = %q, want %q", got, want)
	}
	out, err := r.Run(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	if wantOut := "<--service=api>\n<1.2.3-{environment}>\n<production/api>\n<{unknown}>\n"; out.Output != wantOut {
		t.Errorf("child saw %q, want %q", out.Output, wantOut)
	}
	if out.ExitCode != 0 || out.Truncated {
		t.Errorf("exit %d truncated %v", out.ExitCode, out.Truncated)
	}
}

func TestInjectionArrivesAsOneLiteralArgument(t *testing.T) {
	canary := t.TempDir()
	if err := os.WriteFile(filepath.Join(canary, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	touched := filepath.Join(t.TempDir(), "x")
	prog := script(t, `printf '%s\n' "$#"; for a in "$@"; do printf '<%s>\n' "$a"; done`)
	r := runner(t, Options{Command: []string{prog, "{service}", "{version}", "{environment}"}})
	hostile := []string{
		"1.0; rm -rf " + canary,
		"$(touch " + touched + ")",
		"`touch " + touched + "`",
		"1.0 && touch " + touched,
		"1.0\ntouch " + touched,
		"-rf",
	}
	for _, v := range hostile {
		out, err := r.Run(context.Background(), Target{Service: "api", Version: v, Environment: "staging"})
		if err != nil {
			t.Fatalf("version %q: %v", v, err)
		}
		want := "3\n<api>\n<" + v + ">\n<staging>\n"
		if out.Output != want {
			t.Errorf("version %q: child saw %q, want %q", v, out.Output, want)
		}
	}
	if _, err := os.Stat(touched); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("injected command ran: %s exists (err %v)", touched, err)
	}
	if _, err := os.Stat(filepath.Join(canary, "keep")); err != nil {
		t.Errorf("injected rm ran: %v", err)
	}
}

func TestMinimalEnvironment(t *testing.T) {
	t.Setenv("COUNTERSIGN_TEST_LEAK", "leaked")
	dataDir := t.TempDir()
	prog := script(t, `echo "data=$COUNTERSIGN_DATA_DIR leak=${COUNTERSIGN_TEST_LEAK-unset} home=${HOME-unset}"`)
	r := runner(t, Options{Command: []string{prog}, DataDir: dataDir})
	out, err := r.Run(context.Background(), Target{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "data=" + dataDir + " leak=unset home=unset\n"; out.Output != want {
		t.Errorf("child environment %q, want %q", out.Output, want)
	}
}

func TestNonZeroExitReportsCodeAndOutput(t *testing.T) {
	prog := script(t, `echo "starting"; echo "rollout failed: image not found" >&2; exit 3`)
	r := runner(t, Options{Command: []string{prog}})
	out, err := r.Run(context.Background(), Target{})
	var re *RunError
	if !errors.As(err, &re) || !errors.Is(err, ErrExit) {
		t.Fatalf("err %v, want a *RunError wrapping ErrExit", err)
	}
	if out.ExitCode != 3 || re.Outcome.ExitCode != 3 {
		t.Errorf("exit code %d / %d, want 3", out.ExitCode, re.Outcome.ExitCode)
	}
	for _, want := range []string{"exit code 3", "rollout failed: image not found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The child sleeps in the background, the script waits on its own sleep.
	prog := script(t, `sleep 1000 & echo $! > "$1"; echo started; sleep 1000`)
	r := runner(t, Options{Command: []string{prog, pidFile}, Timeout: 300 * time.Millisecond})
	out, err := r.Run(context.Background(), Target{})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if !strings.Contains(out.Output, "started") {
		t.Errorf("output %q lost what the command printed before the timeout", out.Output)
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	// The background child was killed with the group: gone, or a zombie
	// waiting for init to reap it. Wait for the kill to land; the test's own
	// deadline bounds this loop.
	for !deadOrZombie(pid) {
		time.Sleep(10 * time.Millisecond)
	}
}

func deadOrZombie(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func TestCancelKillsCommand(t *testing.T) {
	prog := script(t, `echo started; exec sleep 1000`)
	r := runner(t, Options{Command: []string{prog}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Run(ctx, Target{}); err == nil {
		t.Fatal("a cancelled run succeeded")
	}
}

func TestOutputBoundedKeepsTail(t *testing.T) {
	prog := script(t, `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo "the end"`)
	r := runner(t, Options{Command: []string{prog}, MaxOutputBytes: 100})
	out, err := r.Run(context.Background(), Target{})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Truncated || !strings.HasPrefix(out.Output, "[... ") || !strings.HasSuffix(out.Output, "line 1999\nthe end\n") {
		t.Errorf("truncated=%v output %q", out.Truncated, out.Output)
	}
	marker, kept, _ := strings.Cut(out.Output, "\n")
	if len(kept) > 100 {
		t.Errorf("kept %d bytes, limit 100", len(kept))
	}
	if !strings.Contains(marker, "truncated") {
		t.Errorf("marker %q", marker)
	}
}

func TestTailBufferKeepsValidUTF8(t *testing.T) {
	b := &tailBuffer{max: 5}
	b.Write([]byte("ééééé")) // 10 bytes; the cut falls mid-character
	s, truncated := b.String()
	_, kept, _ := strings.Cut(s, "\n")
	if !truncated || kept != "éé" {
		t.Errorf("got %q truncated=%v, want tail éé", s, truncated)
	}
}

func TestNewRefusesMissingOrNonExecutable(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.sh")
	os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644)
	for _, cmd := range [][]string{
		nil,
		{""},
		{filepath.Join(dir, "missing.sh")},
		{plain},
		{dir},
		{"countersign-no-such-program-on-path"},
	} {
		if _, err := New(Options{Command: cmd, Timeout: time.Second, MaxOutputBytes: 10, DataDir: dir}); err == nil {
			t.Errorf("New(%q) succeeded", cmd)
		}
	}
}

func TestRelativeCommandResolvedAtStart(t *testing.T) {
	// go test runs in the package directory; the shipped script is two up.
	r := runner(t, Options{Command: []string{"../../demo/deploy.sh", "{service}", "{version}", "{environment}"}})
	if !filepath.IsAbs(r.argv[0]) {
		t.Fatalf("command %q not made absolute", r.argv[0])
	}
	dataDir := t.TempDir()
	r = runner(t, Options{Command: []string{"../../demo/deploy.sh", "{service}", "{version}", "{environment}"}, DataDir: dataDir})
	out, err := r.Run(context.Background(), Target{Service: "api", Version: "1.4.0", Environment: "staging"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Output, "deployed api version 1.4.0 to staging") {
		t.Errorf("output %q", out.Output)
	}
	log, err := os.ReadFile(filepath.Join(dataDir, "deploys.log"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Split(strings.TrimSpace(string(log)), "\t"); len(f) != 4 || f[1] != "api" || f[2] != "1.4.0" || f[3] != "staging" {
		t.Errorf("deploys.log line %q", log)
	}
}
