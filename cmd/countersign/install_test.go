package main

// A new user's first hour: the binary installed somewhere of its own,
// started from a directory that is neither its clone nor its state, with
// an empty home. These tests run the real binary as that user would.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/server/servertest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// newcomer is a user on a fresh machine: an empty home, an empty state
// directory, the binary copied to a directory of its own, and a working
// directory that is none of these.
type newcomer struct {
	bin, binDir, home, state, cwd string
	listen                        string // COUNTERSIGN_APPROVAL_LISTEN, unless empty
}

func newNewcomer(t *testing.T) *newcomer {
	t.Helper()
	n := &newcomer{binDir: t.TempDir(), home: t.TempDir(), state: t.TempDir(), cwd: t.TempDir(), listen: "127.0.0.1:0"}
	n.bin = filepath.Join(n.binDir, "countersign")
	data, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// env is the user's whole environment: nothing of the test's leaks in.
// The approver page listens on a free port, so tests can run side by side.
func (n *newcomer) env(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.home, "XDG_STATE_HOME=" + n.state}
	if n.listen != "" {
		env = append(env, "COUNTERSIGN_APPROVAL_LISTEN="+n.listen)
	}
	return append(env, extra...)
}

// run runs the binary from dir and returns stdout, stderr and the exit status.
func (n *newcomer) run(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(n.bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// stdio starts serve from dir and connects an MCP client to its stdio; the
// returned function ends the session and waits for a clean exit.
func (n *newcomer) stdio(t *testing.T, dir string, env []string, args ...string) (*sdk.ClientSession, func() string) {
	t.Helper()
	cmd := exec.Command(n.bin, append([]string{"serve"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cs := connect(t, &sdk.IOTransport{Reader: stdout, Writer: stdin}, protocolVersions[0], nil)
	return cs, func() string {
		cs.Close()
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("serve exited with %v:\n%s", err, stderr.String())
		}
		return stderr.String()
	}
}

// listening starts serve --http on a free port from dir and returns the
// agent listener's and the approver page's base URLs, read from the JSON
// log on stderr.
func (n *newcomer) listening(t *testing.T, dir string, env []string, args ...string) (agentBase, page string) {
	t.Helper()
	cmd := exec.Command(n.bin, append([]string{"serve", "--http", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	lines := make(chan map[string]any)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for agentBase == "" || page == "" {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("serve --http exited before it listened")
			}
			switch m["msg"] {
			case "approver page":
				page, _ = m["url"].(string)
			case "serving MCP over HTTP":
				s, _ := m["streamable"].(string)
				agentBase = strings.TrimSuffix(s, "/mcp")
			}
		case <-deadline:
			t.Fatal("serve --http did not listen within 30s")
		}
	}
	go func() {
		for range lines { // keep the pipe drained
		}
	}()
	return agentBase, page
}

// tree lists the files under dir as "path mode", sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().String())
		return nil
	})
	slices.Sort(out)
	return out
}

func structuredText(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	res := servertest.CallTool(t, cs, tool, args)
	if res.IsError {
		t.Fatalf("%s %v: %s", tool, args, servertest.ResultText(res))
	}
	return servertest.ResultText(res)
}

// Every demo tool works from the embedded default, over stdio and over
// HTTP, for a binary started far from any clone; nothing is written
// outside the state directory.
func TestFreshInstallRunsAnywhere(t *testing.T) {
	n := newNewcomer(t)
	cs, stop := n.stdio(t, n.cwd, n.env())
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	want := []string{"approval_status", "deploy", "get_balance", "list_counterparties", "list_secrets", "list_transfers", "read_secret", "transfer"}
	if !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	structuredText(t, cs, "get_balance", map[string]any{})
	structuredText(t, cs, "list_counterparties", map[string]any{})
	structuredText(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 12.5, "currency": "USD"})
	if out := structuredText(t, cs, "list_transfers", map[string]any{}); !strings.Contains(out, "Acme Supplies") {
		t.Errorf("list_transfers: %s", out)
	}
	if out := structuredText(t, cs, "deploy", map[string]any{"service": "api", "version": "1.2.3", "environment": "staging"}); !strings.Contains(out, "deployed api version 1.2.3 to staging") {
		t.Errorf("deploy: %s", out)
	}
	if out := structuredText(t, cs, "list_secrets", map[string]any{}); !strings.Contains(out, "staging-db-password") {
		t.Errorf("list_secrets: %s", out)
	}
	secret, _ := countersign.Demo.ReadFile("demo/secrets/staging-db-password")
	if out := structuredText(t, cs, "read_secret", map[string]any{"name": "staging-db-password"}); !strings.Contains(out, strings.TrimSpace(string(secret))) {
		t.Errorf("read_secret: %s", out)
	}
	// approval_status answers as a tool, even about a request it never saw.
	res := servertest.CallTool(t, cs, "approval_status", map[string]any{"auth_req_id": "00000000-0000-4000-8000-000000000000"})
	if !strings.Contains(servertest.ResultText(res), "no such request") {
		t.Errorf("approval_status: %s", servertest.ResultText(res))
	}
	logs := stop()
	if !strings.Contains(logs, "url=http://localhost:") || strings.Contains(logs, "url=http://localhost:0") {
		t.Errorf("the approver page's URL does not carry its real port:\n%s", logs)
	}

	agentBase, page := n.listening(t, n.cwd, n.env())
	hs := connect(t, &sdk.StreamableClientTransport{Endpoint: agentBase + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	checkBalance(t, hs)
	structuredText(t, hs, "read_secret", map[string]any{"name": "staging-db-password"})
	for _, u := range []string{page + "/healthz", page + "/readyz", agentBase + "/healthz", agentBase + "/readyz"} {
		if code, body := getWithHost(t, u, ""); code != http.StatusOK {
			t.Errorf("%s: %d\n%s", u, code, body)
		}
	}
	// SSE clients reach the message endpoint by the name they used for
	// /sse: it is announced relative, not as the listener's 127.0.0.1.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.Replace(agentBase, "127.0.0.1", "localhost", 1)+"/sse", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "data:") {
		}
		if line := sc.Text(); !strings.HasPrefix(line, "data: /message?sessionId=") {
			t.Errorf("SSE endpoint event %q, want a relative /message URL", line)
		}
		resp.Body.Close()
	}
	cancel()
	if m := scrape(t, page); m[`countersign_tool_calls_total{outcome="executed",tool="read_secret"}`] != 1 {
		t.Errorf("metrics of the HTTP run: %v", m)
	}

	for dir, want := range map[string][]string{n.home: nil, n.cwd: nil, n.binDir: {"countersign -rwxr-xr-x"}} {
		if got := tree(t, dir); !slices.Equal(got, want) {
			t.Errorf("%s holds %v, want %v", dir, got, want)
		}
	}
	got := tree(t, n.state)
	for _, w := range []string{
		"countersign drwx------",
		"countersign/countersign.db -rw-------",
		"countersign/demo/deploy.sh -rwx------",
		"countersign/demo/secrets/prod-db-password -rw-------",
		"countersign/deploys.log -rw-------",
	} {
		if !slices.Contains(got, w) {
			t.Errorf("state directory lacks %q: %v", w, got)
		}
	}
}

// init writes a configuration a user can read and change; it validates,
// serves from another directory, takes an agent, and names the stdio agent.
func TestInitValidateServeFromElsewhere(t *testing.T) {
	n := newNewcomer(t)
	dir := filepath.Join(t.TempDir(), "countersign")
	file := filepath.Join(dir, "mcp.yaml")
	out, errOut, code := n.run(t, n.cwd, n.env(), "init", dir)
	if code != 0 || !strings.Contains(out, "wrote "+file) || !strings.Contains(out, "countersign config validate "+file) {
		t.Fatalf("init: %d\n%s%s", code, out, errOut)
	}
	written, _ := os.ReadFile(file)
	if string(written) != string(countersign.DefaultConfig()) {
		t.Error("init did not write the embedded default")
	}
	for _, section := range []string{"\nupstreams:", "# upstreams:", "\n  # data_dir:", "stdio_agent:", "countersign agents add"} {
		if !strings.Contains(string(written), section) {
			t.Errorf("the written mcp.yaml does not explain %q", section)
		}
	}
	if _, errOut, code := n.run(t, n.cwd, n.env(), "init", dir); code == 0 || !strings.Contains(errOut, "refusing to overwrite "+file) {
		t.Errorf("second init: %d %s", code, errOut)
	}

	token, errOut, code := n.run(t, n.cwd, n.env(), "agents", "add", "ci-bot", "--config", file)
	token = strings.TrimSpace(token)
	if code != 0 || !strings.HasPrefix(token, "cs_") {
		t.Fatalf("agents add: %d %q %s", code, token, errOut)
	}
	sum := sha256.Sum256([]byte(token))
	edited, _ := os.ReadFile(file)
	if !strings.Contains(string(edited), "- {id: ci-bot, token_sha256: "+hex.EncodeToString(sum[:])+"}") || strings.Contains(string(edited), token) {
		t.Errorf("the file does not hold the token's hash alone:\n%s", edited)
	}
	if strings.Count(string(edited), "\n#") != strings.Count(string(written), "\n#") {
		t.Error("agents add lost comments")
	}

	elsewhere := t.TempDir()
	if out, errOut, code := n.run(t, elsewhere, n.env(), "config", "validate", file); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate: %d %s %s", code, out, errOut)
	}
	if out, _, _ := n.run(t, elsewhere, n.env(), "agents", "list", "--config", file); !strings.Contains(out, "ci-bot") {
		t.Errorf("agents list: %s", out)
	}

	cs, stop := n.stdio(t, elsewhere, n.env("COUNTERSIGN_SERVER_STDIO_AGENT=claude-desktop"), "--config", file)
	if out := structuredText(t, cs, "deploy", map[string]any{"service": "web", "version": "2.0.0", "environment": "staging"}); !strings.Contains(out, "deployed web") {
		t.Errorf("deploy: %s", out)
	}
	structuredText(t, cs, "read_secret", map[string]any{"name": "staging-db-password"})
	stop()
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	if _, errOut, code := n.run(t, elsewhere, n.env(), "audit", "export", "--config", file, "--out", export); code != 0 {
		t.Fatalf("audit export: %s", errOut)
	}
	if data, _ := os.ReadFile(export); !strings.Contains(string(data), `"agent":"claude-desktop"`) {
		t.Errorf("the audit log does not name the stdio agent server.stdio_agent set:\n%s", data)
	}

	// Over HTTP, the agent added above needs its token.
	agentBase, _ := n.listening(t, elsewhere, n.env(), "--config", file)
	if code, _ := getWithHost(t, agentBase+"/mcp", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	hc := &http.Client{Transport: bearer{token, http.DefaultTransport}}
	hs := connect(t, &sdk.StreamableClientTransport{Endpoint: agentBase + "/mcp", MaxRetries: -1, HTTPClient: hc}, protocolVersions[0], nil)
	checkBalance(t, hs)

	if got := tree(t, elsewhere); got != nil {
		t.Errorf("serve wrote into its working directory: %v", got)
	}
	if got := tree(t, dir); len(got) != 7 { // mcp.yaml, demo/, deploy.sh, secrets/ and three secrets
		t.Errorf("the config directory holds %v", got)
	}
}

// Changing only the approver page's listen address moves the page, its
// links and its checks together: a key enrolled through the link the CLI
// prints approves a transfer in a real browser, on the new port.
func TestBrowserApprovalOnAnotherPortByEnvironmentAlone(t *testing.T) {
	n := newNewcomer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n.listen = fmt.Sprintf("127.0.0.1:%d", port)
	agentBase, page := n.listening(t, n.cwd, n.env())
	if want := fmt.Sprintf("http://localhost:%d", port); page != want {
		t.Fatalf("approver page at %s, want %s", page, want)
	}
	link, errOut, code := n.run(t, n.cwd, n.env(), "approvers", "enroll", "alice")
	link = strings.TrimSpace(strings.SplitN(link, "\n", 2)[0])
	if code != 0 || !strings.HasPrefix(link, page+"/enroll/") {
		t.Fatalf("enroll link %q (%d %s), want one on %s", link, code, errOut, page)
	}
	tab := approvaltest.Tab(t, approvaltest.NewBrowser(t), true)
	approvaltest.Enroll(t, tab, link)

	a := newAgentAt(t, agentBase+"/mcp")
	call := a.start("transfer", transferArgs(20000))
	url, _ := a.approvalURL(t, 1, call)
	if !strings.HasPrefix(url, page+"/requests/") {
		t.Fatalf("approval URL %s is not on %s", url, page)
	}
	approvaltest.Approve(t, tab, url)
	if res := await(t, call); res.IsError {
		t.Fatalf("approved transfer failed: %s", servertest.ResultText(res))
	}
}
