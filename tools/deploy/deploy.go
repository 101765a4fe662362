// Package deploy runs the deploy tool's command backend: a fixed argv from
// the config whose {service}, {version} and {environment} placeholders are
// replaced inside each argument, executed directly (never through a
// shell), so a value arrives as one literal argument however it is spelled.
//
// The child gets a minimal environment (PATH, LANG and
// COUNTERSIGN_DATA_DIR), stdin from /dev/null, its own process group, and
// a timeout after which the whole group is killed. Its combined stdout and
// stderr are captured up to a bound; beyond it the start is dropped and a
// marker says how much, because the end of the output says why it failed.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Errors callers can test with errors.Is; a run that fails returns a
// *RunError wrapping one of them.
var (
	ErrExit      = errors.New("deploy command failed")
	ErrTimeout   = errors.New("deploy command timed out")
	ErrStart     = errors.New("deploy command could not start")
	ErrCancelled = errors.New("deploy command cancelled")
)

// Placeholders replaced in each argument of the command.
const (
	PlaceholderService     = "{service}"
	PlaceholderVersion     = "{version}"
	PlaceholderEnvironment = "{environment}"
)

// Runner runs the configured command. Build it with [New].
type Runner struct {
	argv      []string
	timeout   time.Duration
	maxOutput int
	env       []string
}

// Options configure a Runner. Command is the argv from config; a relative
// program path containing a slash (demo/deploy.sh) is resolved against
// the working directory when New runs, a bare name (deploy-tool) through
// PATH, so later changes of directory or PATH do not change what runs.
type Options struct {
	Command        []string
	Timeout        time.Duration
	MaxOutputBytes int
	DataDir        string // exported to the child as COUNTERSIGN_DATA_DIR (made absolute)
}

// New checks that the program exists and is an executable file.
func New(o Options) (*Runner, error) {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, errors.New("deploy: no command configured")
	}
	prog := o.Command[0]
	var err error
	if strings.ContainsRune(prog, '/') {
		prog, err = filepath.Abs(prog)
	} else {
		prog, err = exec.LookPath(prog)
	}
	if err != nil {
		return nil, fmt.Errorf("deploy: command %q: %w", o.Command[0], err)
	}
	fi, err := os.Stat(prog)
	if err != nil {
		return nil, fmt.Errorf("deploy: command: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("deploy: command %s: not an executable file (mode %v)", prog, fi.Mode())
	}
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("deploy: timeout must be positive, got %v", o.Timeout)
	}
	if o.MaxOutputBytes <= 0 {
		return nil, fmt.Errorf("deploy: max output must be positive, got %d", o.MaxOutputBytes)
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("deploy: data dir: %w", err)
	}
	return &Runner{
		argv:      append([]string{prog}, o.Command[1:]...),
		timeout:   o.Timeout,
		maxOutput: o.MaxOutputBytes,
		env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"LANG=C.UTF-8",
			"COUNTERSIGN_DATA_DIR=" + dataDir,
		},
	}, nil
}

// Target is what to deploy.
type Target struct {
	Service     string
	Version     string
	Environment string
}

// Argv returns the command line Run would execute for t. A placeholder
// inside a substituted value is not expanded again.
func (r *Runner) Argv(t Target) []string {
	rep := strings.NewReplacer(
		PlaceholderService, t.Service,
		PlaceholderVersion, t.Version,
		PlaceholderEnvironment, t.Environment,
	)
	out := make([]string, len(r.argv))
	out[0] = r.argv[0]
	for i, a := range r.argv[1:] {
		out[i+1] = rep.Replace(a)
	}
	return out
}

// Outcome is a finished run.
type Outcome struct {
	Argv      []string
	ExitCode  int
	Output    string // combined stdout and stderr, bounded
	Truncated bool
	Duration  time.Duration
}

// RunError is a run that did not exit 0: Kind is ErrExit, ErrTimeout or
// ErrStart; Outcome holds the exit code (-1 if killed or never started) and
// the captured output.
type RunError struct {
	Kind    error
	Outcome Outcome
	Err     error // underlying cause, if any
}

// tailForError bounds how much output an error message carries.
const tailForError = 1024

func (e *RunError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	switch e.Kind {
	case ErrExit:
		fmt.Fprintf(&b, " with exit code %d", e.Outcome.ExitCode)
	case ErrTimeout, ErrCancelled:
		fmt.Fprintf(&b, " after %v; its process group was killed", e.Outcome.Duration.Round(time.Millisecond))
	}
	if e.Err != nil && e.Kind == ErrStart {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if out := strings.TrimSpace(tail(e.Outcome.Output, tailForError)); out != "" {
		b.WriteString("; output ends: ")
		b.WriteString(out)
	}
	return b.String()
}

func (e *RunError) Unwrap() error { return e.Kind }

// Run executes the command for t once and waits for it. It returns a
// *RunError when the command cannot start, exits non-zero, or outlives the
// timeout or ctx (the whole process group is then killed).
func (r *Runner) Run(ctx context.Context, t Target) (Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	out := Outcome{Argv: r.Argv(t), ExitCode: -1}
	cmd := exec.CommandContext(ctx, out.Argv[0], out.Argv[1:]...)
	cmd.Env = r.env
	cmd.Stdin = nil // /dev/null
	buf := &tailBuffer{max: r.maxOutput}
	cmd.Stdout, cmd.Stderr = buf, buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the group, not just the leader: a script's children would
		// otherwise outlive the timeout.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild that escaped the group could hold the pipes open;
	// stop waiting for it shortly after the command itself is done.
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	err := cmd.Start()
	if err != nil {
		return out, &RunError{Kind: ErrStart, Outcome: out, Err: err}
	}
	err = cmd.Wait()
	out.Duration = time.Since(start)
	out.Output, out.Truncated = buf.String()
	if cmd.ProcessState != nil {
		out.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case ctx.Err() != nil && (err != nil || out.ExitCode != 0):
		kind := ErrTimeout
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			kind = ErrCancelled
		}
		return out, &RunError{Kind: kind, Outcome: out, Err: context.Cause(ctx)}
	case err != nil:
		return out, &RunError{Kind: ErrExit, Outcome: out, Err: err}
	}
	return out, nil
}

// tailBuffer keeps the last max bytes written to it and counts the rest.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > b.max { // compact in batches
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// String returns the kept output, prefixed with a marker when something
// was dropped, as valid UTF-8.
func (b *tailBuffer) String() (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept, dropped := b.buf, b.dropped
	if over := len(kept) - b.max; over > 0 {
		kept, dropped = kept[over:], dropped+int64(over)
	}
	if dropped == 0 {
		return strings.ToValidUTF8(string(kept), "\uFFFD"), false
	}
	// Do not start mid-character.
	for len(kept) > 0 && !utf8.RuneStart(kept[0]) {
		kept, dropped = kept[1:], dropped+1
	}
	s := strings.ToValidUTF8(string(kept), "\uFFFD")
	return fmt.Sprintf("[... %d bytes of output truncated ...]\n", dropped) + s, true
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return "..." + s
}
