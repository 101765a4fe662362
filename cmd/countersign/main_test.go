package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The protocol versions clients speak today: the SDK's default and the one
// before it.
var protocolVersions = []string{"2026-07-28", "2025-11-25"}

var (
	binPath  string // the countersign binary built once for subprocess tests
	repoRoot string
)

func TestMain(m *testing.M) {
	upstreamtest.Main() // returns only when not re-executed as a test upstream
	wd, _ := os.Getwd()
	repoRoot = filepath.Join(wd, "..", "..")
	dir, err := os.MkdirTemp("", "countersign-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "countersign")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building countersign: " + err.Error())
	}
	code := m.Run()
	pgtest.Stop() // the replicas tests' PostgreSQL, if they started one
	os.RemoveAll(dir)
	os.Exit(code)
}

// testConfig is the shipped configuration with a private data directory,
// ephemeral listeners and short approval timeouts (daemontest.Config).
func testConfig(t testing.TB, edit func(*config.Config)) *config.Config {
	t.Helper()
	return daemontest.Config(t, edit)
}

// stack is an assembled Countersign as the in-process tests drive it.
type stack = daemon.Stack

// assemble assembles a Countersign in-process, as serve does.
func assemble(ctx context.Context, c *config.Config, log *slog.Logger) (*stack, error) {
	return daemon.Assemble(ctx, c, daemon.Options{Logger: log, Version: buildVersion()})
}

// startHTTP assembles a full Countersign in-process and serves agents on a
// real listener at 127.0.0.1 with a random port.
func startHTTP(t testing.TB, c *config.Config) (*stack, string) {
	t.Helper()
	log := daemontest.Logger(t, slog.LevelWarn)
	s, err := assemble(context.Background(), c, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	h, closeSessions := s.Server().HTTPHandler(base)
	srv := daemon.NewHTTPServer(h, log)
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closeSessions(ctx)
		srv.Shutdown(ctx)
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, base
}

func connect(t testing.TB, transport sdk.Transport, version string, opts *sdk.ClientOptions) *sdk.ClientSession {
	t.Helper()
	// The SSE transport ties its event stream to this context: it must
	// outlive the connect call.
	ctx := t.Context()
	client := sdk.NewClient(&sdk.Implementation{Name: "countersign-test", Version: "1"}, opts)
	cs, err := client.Connect(ctx, transport, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s): %v", version, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func checkTools(t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*sdk.Tool{}
	for _, tool := range list.Tools {
		got[tool.Name] = tool
	}
	for _, want := range []string{"get_balance", "transfer", "deploy", "read_secret", "approval_status"} {
		if got[want] == nil {
			t.Errorf("tool %s not listed", want)
		}
	}
	if gb := got["get_balance"]; gb != nil {
		if gb.Annotations == nil || !gb.Annotations.ReadOnlyHint {
			t.Errorf("get_balance is not annotated read-only: %+v", gb.Annotations)
		}
		if gb.InputSchema == nil {
			t.Error("get_balance has no input schema")
		}
	}
	if tr := got["transfer"]; tr != nil {
		if tr.Annotations == nil || tr.Annotations.DestructiveHint == nil || !*tr.Annotations.DestructiveHint {
			t.Errorf("transfer is not annotated destructive: %+v", tr.Annotations)
		}
	}
}

func checkBalance(t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	res := servertest.CallTool(t, cs, "get_balance", map[string]any{})
	if res.IsError {
		t.Fatalf("get_balance failed: %s", servertest.ResultText(res))
	}
	if !strings.Contains(servertest.ResultText(res), "operating") {
		t.Errorf("get_balance result does not mention the operating account: %s", servertest.ResultText(res))
	}
}

// The binary's own output under stdio: logs on stderr, frames on stdout.
// Both protocol versions over stdio are tested in package server.
func TestStdioServesOnlyJSONRPCOnStdout(t *testing.T) {
	for _, version := range protocolVersions[:1] {
		t.Run(version, func(t *testing.T) {
			cmd := exec.Command(binPath, "serve", "--log-format", "json")
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(),
				"COUNTERSIGN_SERVER_DATA_DIR="+t.TempDir(),
				"COUNTERSIGN_APPROVAL_LISTEN=127.0.0.1:0",
				"COUNTERSIGN_SERVER_LOG_LEVEL=debug",
			)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var captured syncBuffer
			cs := connect(t, &sdk.IOTransport{Reader: io.NopCloser(io.TeeReader(stdout, &captured)), Writer: stdin}, version, nil)
			checkTools(t, cs)
			checkBalance(t, cs)
			res := servertest.CallTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 12.5, "currency": "USD"})
			if res.IsError {
				t.Fatalf("small transfer failed: %s", servertest.ResultText(res))
			}
			cs.Close()
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("server exit: %v\nstderr:\n%s", err, stderr.String())
			}

			lines := 0
			sc := bufio.NewScanner(bytes.NewReader(captured.Bytes()))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var frame struct {
					JSONRPC string `json:"jsonrpc"`
				}
				if err := json.Unmarshal(sc.Bytes(), &frame); err != nil || frame.JSONRPC != "2.0" {
					t.Errorf("stdout line is not a JSON-RPC frame: %q", sc.Text())
				}
				lines++
			}
			if lines < 3 {
				t.Errorf("only %d frames on stdout", lines)
			}
			if !strings.Contains(stderr.String(), `"msg":"approver page"`) || !strings.Contains(stderr.String(), `"msg":"serving MCP on stdio"`) {
				t.Errorf("expected JSON log lines on stderr, got:\n%s", stderr.String())
			}
			// Every line on stderr is a record of the configured logger: none
			// went through a default logger in another format.
			sc = bufio.NewScanner(bytes.NewReader(stderr.Bytes()))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var rec struct {
					Level string `json:"level"`
					Msg   string `json:"msg"`
				}
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Level == "" || rec.Msg == "" {
					t.Errorf("stderr line is not a JSON log record: %q", sc.Text())
				}
			}
		})
	}
}

func TestInvalidConfigExitsWithStatus2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("server:\n  shutdown_timeout: soon\ntools:\n  get_balance: {level: low}\n"), 0o600)
	for _, args := range [][]string{{"serve", "--config", bad}, {"config", "validate", bad}} {
		cmd := exec.Command(binPath, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: err = %v, want exit status 2", args, err)
		}
		if !strings.Contains(stderr.String(), bad+": server.shutdown_timeout: expected a duration") {
			t.Errorf("%v: stderr does not name file and key:\n%s", args, stderr.String())
		}
	}
}

func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	for _, tc := range []struct {
		name, ready string
		args        []string
	}{
		{"http", "serving MCP over HTTP", []string{"serve", "--http", "127.0.0.1:0"}},
		{"stdio", "serving MCP on stdio", []string{"serve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binPath, tc.args...)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "COUNTERSIGN_SERVER_DATA_DIR="+t.TempDir(), "COUNTERSIGN_APPROVAL_LISTEN=127.0.0.1:0")
			var stderr syncBuffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe() // held open: only the signal ends stdio
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(stderr.String(), tc.ready) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("server did not start:\n%s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running 30s after SIGTERM:\n%s", stderr.String())
			}
			if !strings.Contains(stderr.String(), "shutting down") {
				t.Errorf("no shutdown log:\n%s", stderr.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
