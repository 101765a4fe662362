// Package upstreamtest is a small, real MCP server (built on the official
// go-sdk) that tests use as an "upstream": the server a Countersign gateway
// connects to as a client and whose tools it re-exposes.
//
// It has five tools, whose names other packages' tests depend on:
//
//   - read_note {name}: returns "note <name>: <text>" and structured content
//     {name, text, found}; text is what write_note last stored under that
//     name on the same server, "(empty)" otherwise. Read-only; has an output
//     schema.
//   - write_note {name, text}: stores the note and returns "wrote <name>".
//     Destructive; its record line (below) is the observable side effect.
//   - slow {steps 1..100 (default 5), step_ms >= 0 (default 200)}: sleeps
//     step_ms per step and, if the request carries a progress token, sends
//     one notifications/progress per step (progress=i, total=steps,
//     message "step i/steps"). If its context is cancelled (the client sent
//     notifications/cancelled, or the session went away) it records
//     "cancelled" and returns; otherwise it records "completed".
//   - fail {}: returns a tool result with isError=true and the text
//     "upstream failure" (not a JSON-RPC error).
//   - add_tool {name matching ^[a-z_]{1,20}$}: adds a read-only tool of
//     that name that echoes its arguments (as JSON text and structured
//     content) and returns "added <name>". The go-sdk then sends
//     notifications/tools/list_changed to the connected clients. Names of
//     the built-in tools are refused (isError); re-adding an added name
//     replaces it.
//
// With [Options].RPCError it also has rpc_error {size 0..8 MiB, secret},
// which answers the call with a JSON-RPC error (code -32000, not a tool
// result) whose message is size bytes of filler, then, if secret, a space
// and [ErrorSecret]: a hostile upstream's huge error, or one holding a
// secret past its first KiB.
//
// # Record
//
// If [Options].RecordPath is set, each tool handler appends one JSON line
// (a [Record]) to that file when it is invoked, with event "called", the
// arguments exactly as the client sent them and the request's _meta. slow
// appends a second line when it ends, with event "cancelled" or
// "completed". Arguments the go-sdk rejects against the input schema never
// reach a handler and are not recorded. Each line is one write(2) to a file
// opened with O_APPEND, so concurrent calls and several processes may share
// one record file. [ReadRecord] reads it back.
//
// # Serving
//
// [NewServer] returns the go-sdk server to connect to any transport,
// [ServeStdio] serves it on stdin/stdout, and [Handler] serves it over
// Streamable HTTP (one server shared by every session of that handler, so
// add_tool in one session changes the tool list of all of them).
// [FilesystemServer] finds the other upstream the tests run, one nobody
// here wrote: the reference filesystem server from npm.
//
// # Re-exec contract
//
// A test binary can run the server as a stdio subprocess of itself: its
// TestMain calls [Main] before m.Run, and the test starts os.Args[0] with
// these environment variables:
//
//	COUNTERSIGN_UPSTREAMTEST=stdio          serve MCP on stdin/stdout instead of running tests
//	COUNTERSIGN_UPSTREAMTEST_RECORD=<path>  the record file (optional; empty means no record)
//	COUNTERSIGN_UPSTREAMTEST_CRASH_AFTER=N  exit abruptly with status 3 right after the
//	                                        response to the Nth tools/call has been written
//	COUNTERSIGN_UPSTREAMTEST_MUTABLE=1      also offer rug and mutate (see mutate.go)
//	COUNTERSIGN_UPSTREAMTEST_RPC_ERROR=1    also offer rpc_error
//
// For example:
//
//	func TestMain(m *testing.M) {
//		upstreamtest.Main() // returns only when not re-executed as the upstream
//		os.Exit(m.Run())
//	}
//
//	cmd := exec.Command(os.Args[0])
//	cmd.Env = append(os.Environ(), upstreamtest.EnvMode+"=stdio", upstreamtest.EnvRecord+"="+path)
//	session, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
//
// The process exits 0 when stdin reaches EOF (the client closed it) and 1 if
// serving fails. Any other non-empty value of COUNTERSIGN_UPSTREAMTEST, or a
// CRASH_AFTER that is not a positive integer, exits 2 at once rather than
// running the test suite in the child. Logs go to stderr only.
package upstreamtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Environment variables of the re-exec contract; see the package comment.
const (
	EnvMode       = "COUNTERSIGN_UPSTREAMTEST"
	EnvRecord     = "COUNTERSIGN_UPSTREAMTEST_RECORD"
	EnvCrashAfter = "COUNTERSIGN_UPSTREAMTEST_CRASH_AFTER"
	EnvMutable    = "COUNTERSIGN_UPSTREAMTEST_MUTABLE"
	EnvRPCError   = "COUNTERSIGN_UPSTREAMTEST_RPC_ERROR"
)

// crashExitCode is the status a process started with EnvCrashAfter exits
// with.
const crashExitCode = 3

// Options configures a server.
type Options struct {
	// RecordPath is the file every tool invocation appends a JSON line to.
	// Empty means nothing is recorded.
	RecordPath string
	// Mutable adds the tools rug and mutate, with which a test makes the
	// server rename, relabel or change its tools (see mutate.go).
	Mutable bool
	// Stubborn adds the hostile tool [Stubborn] (stubborn.go).
	Stubborn bool
	// RPCError adds the tool rpc_error (rpcerror.go).
	RPCError bool
}

// stderrLogger logs warnings and errors of the go-sdk to stderr; stdout may
// be the MCP stream.
func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// ServeStdio serves a [NewServer] on os.Stdin and os.Stdout until stdin
// reaches EOF (nil) or ctx is cancelled (ctx.Err()).
func ServeStdio(ctx context.Context, opts Options) error {
	return NewServer(opts).Run(ctx, &mcp.StdioTransport{})
}

// Handler returns a Streamable HTTP handler serving one [NewServer] to
// every session.
func Handler(opts Options) http.Handler {
	srv := NewServer(opts)
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Logger: stderrLogger()})
}

// Main serves stdio and exits the process if EnvMode is "stdio"; it returns
// false if EnvMode is unset or empty. Call it first in a TestMain.
func Main() bool {
	mode := os.Getenv(EnvMode)
	if mode == "" {
		return false
	}
	if mode != "stdio" {
		fmt.Fprintf(os.Stderr, "upstreamtest: %s=%q: the only mode is \"stdio\"\n", EnvMode, mode)
		os.Exit(2)
	}
	opts := Options{RecordPath: os.Getenv(EnvRecord), Mutable: os.Getenv(EnvMutable) == "1", RPCError: os.Getenv(EnvRPCError) == "1"}
	var t mcp.Transport = &mcp.StdioTransport{}
	if s := os.Getenv(EnvCrashAfter); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "upstreamtest: %s=%q: want a positive integer\n", EnvCrashAfter, s)
			os.Exit(2)
		}
		t = &crashTransport{inner: t, after: n}
	}
	if err := NewServer(opts).Run(context.Background(), t); err != nil {
		fmt.Fprintf(os.Stderr, "upstreamtest: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true // unreachable
}

// crashTransport wraps a transport so that the process exits right after
// the response to the after-th tools/call request has been written. It is
// used only when a crash is asked for: the wrapper hides the stdio
// connection's unexported session hook, which only serves to reject JSON-RPC
// batches under protocol 2025-06-18 and later.
type crashTransport struct {
	inner mcp.Transport
	after int
}

func (t *crashTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &crashConn{Connection: c, after: t.after, calls: map[jsonrpc.ID]bool{}}, nil
}

type crashConn struct {
	mcp.Connection
	after int

	mu    sync.Mutex
	calls map[jsonrpc.ID]bool // tools/call requests not yet answered
	done  int                 // tools/call requests answered
}

func (c *crashConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "tools/call" && req.ID.IsValid() {
		c.mu.Lock()
		c.calls[req.ID] = true
		c.mu.Unlock()
	}
	return msg, err
}

func (c *crashConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	n := 0 // the number of this tools/call answer, or 0
	if resp, ok := msg.(*jsonrpc.Response); ok {
		c.mu.Lock()
		if c.calls[resp.ID] {
			delete(c.calls, resp.ID)
			c.done++
			n = c.done
		}
		c.mu.Unlock()
	}
	err := c.Connection.Write(ctx, msg)
	if n >= c.after {
		fmt.Fprintf(os.Stderr, "upstreamtest: exiting after answering tool call %d (%s=%d)\n", n, EnvCrashAfter, c.after)
		os.Exit(crashExitCode)
	}
	return err
}
