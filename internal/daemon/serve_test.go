package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func testOptions(t testing.TB) Options {
	return Options{Logger: daemontest.Logger(t, slog.LevelInfo), Version: "test"}
}

// running is a daemon serving in the background; stop ends its context
// and returns what Run returned.
type running struct {
	*Daemon
	stop func() error
}

// startDaemon opens a daemon on c and runs it until the test ends.
func startDaemon(t *testing.T, c *config.Config, opts Options) *running {
	t.Helper()
	d, err := Open(context.Background(), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var result error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { stop() })
	return &running{Daemon: d, stop: stop}
}

func connect(t *testing.T, transport sdk.Transport) *sdk.ClientSession {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "daemon-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), transport, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// streamable connects to the agent listener of a daemon serving c.
func streamable(t *testing.T, c *config.Config) *sdk.ClientSession {
	t.Helper()
	return connect(t, &sdk.StreamableClientTransport{Endpoint: "http://" + c.HTTP.Addr + "/mcp", MaxRetries: -1})
}

// callTool calls name and returns the result with its text.
func callTool(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (*sdk.CallToolResult, string) {
	t.Helper()
	res := servertest.CallTool(t, cs, name, args)
	return res, servertest.ResultText(res)
}

// checkBalance calls the routine get_balance and checks it answered.
func checkBalance(t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	if res, text := callTool(t, cs, "get_balance", map[string]any{}); res.IsError || !strings.Contains(text, "operating") {
		t.Fatalf("get_balance: error=%v %s", res.IsError, text)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Over HTTP the daemon serves agents and the operations endpoints on both
// listeners, holds its data directory against a second server, and when
// its context ends lets go of the listeners and the directory.
func TestServeHTTPUntilTheContextEnds(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) { c.HTTP.Addr = "127.0.0.1:0" })
	d := startDaemon(t, c, testOptions(t))
	agents := "http://" + d.AgentAddr().String()
	page := "http://" + d.PageAddr().String()

	checkBalance(t, streamable(t, c))
	for _, base := range []string{page, agents} {
		if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("%s/healthz: %d %q", base, code, body)
		}
		if code, body := get(t, base+"/readyz"); code != http.StatusOK || !strings.Contains(body, "ok    database") {
			t.Errorf("%s/readyz: %d\n%s", base, code, body)
		}
	}
	second := *c
	second.HTTP.Addr, second.Approval.Listen = "127.0.0.1:0", "127.0.0.1:0"
	if _, err := Open(context.Background(), &second, testOptions(t)); err == nil || !strings.Contains(err.Error(), "is in use by countersign serve") {
		t.Errorf("a second daemon on the same data directory: %v", err)
	}

	if err := d.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, addr := range []net.Addr{d.AgentAddr(), d.PageAddr()} {
		if conn, err := net.Dial("tcp", addr.String()); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
	again, err := Open(context.Background(), &second, testOptions(t))
	if err != nil {
		t.Fatalf("the data directory after Run returned: %v", err)
	}
	again.close()
}

// Over stdio the daemon serves the one agent on its pipes, and returns
// when that agent closes stdin.
func TestServeStdioUntilStdinCloses(t *testing.T) {
	c := daemontest.Config(t, nil)
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	opts := testOptions(t)
	opts.Stdin, opts.Stdout = stdinR, stdoutW
	d, err := Open(context.Background(), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d.AgentAddr() != nil {
		t.Errorf("agent listener %s while serving stdio", d.AgentAddr())
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	cs := connect(t, &sdk.IOTransport{Reader: stdoutR, Writer: stdinW})
	checkBalance(t, cs)
	cs.Close() // closes stdin
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still serving 30s after stdin closed")
	}
}

// An agent listener beyond loopback with no agent tokens would serve
// anyone: refused as a configuration error before the data directory is
// touched.
func TestOpenRefusesAnOpenHTTPListenerWithoutAgents(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "0.0.0.0:0"
		c.Server.DataDir = filepath.Join(c.Server.DataDir, "data")
	})
	_, err := Open(context.Background(), c, testOptions(t))
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "http.agents") {
		t.Fatalf("err = %v, want a ConfigError naming http.agents", err)
	}
	if _, err := os.Stat(filepath.Join(c.Server.DataDir, store.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data directory was written: %v", err)
	}
}

// With http.oauth the same listener may open: agents then present access
// tokens of the authorization server, and nobody is anonymous.
func TestOpenTakesOAuthInsteadOfAgentTokens(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "0.0.0.0:0"
		c.HTTP.OAuth = config.OAuth{Issuer: "https://idp.example.com", Scopes: []string{"mcp:tools"}, AgentClaim: config.AgentClaimClientID}
	})
	d, err := Open(context.Background(), c, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	d.close()
}

// A stack that fails to assemble (here: a witness key that does not parse,
// found only once the log is open) leaves nothing behind: the error is the
// configuration's, and the data directory and the page's port are free
// for the next start.
func TestOpenReleasesWhatItTookWhenAssemblyFails(t *testing.T) {
	c := daemontest.Config(t, func(c *config.Config) {
		c.Audit.Witnesses = []config.Witness{{URL: "http://127.0.0.1:1", Key: "not a verifier key"}}
	})
	_, err := Open(context.Background(), c, testOptions(t))
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "audit.witnesses[0]") {
		t.Fatalf("err = %v, want a ConfigError naming audit.witnesses[0]", err)
	}
	// Open derived the page's URL from the port it bound.
	u, err := url.Parse(c.Approval.PublicURL)
	if err != nil || u.Port() == "" {
		t.Fatalf("public URL %q", c.Approval.PublicURL)
	}
	page := "127.0.0.1:" + u.Port()
	if ln, err := net.Listen("tcp", page); err != nil {
		t.Errorf("the page's address %s is still taken: %v", page, err)
	} else {
		ln.Close()
	}
	c.Audit.Witnesses = nil
	d, err := Open(context.Background(), c, testOptions(t))
	if err != nil {
		t.Fatalf("the next start on the data directory: %v", err)
	}
	d.close()
}
