package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// serveLines starts serve --http on a free port with a JSON log and
// returns its log lines up to the one announcing the agent listener; the
// server runs until the test ends.
func serveLines(t *testing.T, n *newcomer, env []string, args ...string) []map[string]any {
	t.Helper()
	cmd := exec.Command(n.bin, append([]string{"serve", "--http", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Dir, cmd.Env = n.cwd, env
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	found := make(chan []map[string]any, 1)
	go func() {
		var lines []map[string]any
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			lines = append(lines, m)
			if m["msg"] == "serving MCP over HTTP" {
				found <- lines
				for sc.Scan() { // keep the pipe drained
				}
				return
			}
		}
		close(found)
	}()
	select {
	case lines, ok := <-found:
		if !ok {
			t.Fatal("serve --http exited before it listened")
		}
		return lines
	case <-time.After(30 * time.Second):
		t.Fatal("serve --http did not listen within 30s")
	}
	return nil
}

func logLine(t *testing.T, lines []map[string]any, msg string) map[string]any {
	t.Helper()
	for _, m := range lines {
		if m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %q line in %v", msg, lines)
	return nil
}

// A first try: config validate counts the tools serve offers (not the ciba
// policy, which is no tool), serve's start-up line says the same number and
// tools/list lists them; with no agents configured, the HTTP listener takes
// anonymous callers on loopback and its start-up line says so.
func TestFirstTryCountsToolsOnceAndSaysAgentsAreAnonymous(t *testing.T) {
	n := newNewcomer(t)
	out, errOut, code := n.run(t, n.cwd, n.env(), "config", "validate")
	m := regexp.MustCompile(`valid \((\d+) tools, `).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("config validate: exit %d\n%s%s", code, out, errOut)
	}
	validated, _ := strconv.Atoi(m[1])

	lines := serveLines(t, n, n.env())
	started := logLine(t, lines, "countersign started")
	if served, _ := started["tools"].(float64); int(served) != validated {
		t.Errorf("config validate says %d tools, serve says %v", validated, started["tools"])
	}
	http := logLine(t, lines, "serving MCP over HTTP")
	if agents, _ := http["agents"].(string); !strings.HasPrefix(agents, "anonymous: ") || !strings.Contains(agents, "agents add") {
		t.Errorf("the start-up line does not say HTTP agents are anonymous: %v", http)
	}
	base := strings.TrimSuffix(http["streamable"].(string), "/mcp")
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Tools) != validated {
		t.Errorf("tools/list has %d tools, config validate said %d", len(list.Tools), validated)
	}
	checkBalance(t, cs) // as "anonymous"
}

// A typo'd variable is not ignored in silence: config validate (and every
// command loading the configuration) warns of it, and still validates.
func TestConfigValidateWarnsOfUnknownVariables(t *testing.T) {
	n := newNewcomer(t)
	out, errOut, code := n.run(t, n.cwd, n.env("COUNTERSIGN_APPROVAL_TIMOUT=1m"), "config", "validate")
	if code != 0 || !strings.Contains(out, "valid") ||
		!strings.Contains(errOut, "COUNTERSIGN_APPROVAL_TIMOUT is not a setting, so it is ignored; did you mean COUNTERSIGN_APPROVAL_TIMEOUT?") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
}

// approvers enroll prints its link either way, and says so when no server
// listens at the page address, since the link works only while one does;
// with serve running there, the link opens its page and no note is added.
func TestEnrollSaysWhenNoServerListens(t *testing.T) {
	n := newNewcomer(t)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	env := n.env("COUNTERSIGN_APPROVAL_LISTEN=" + addr)
	out, errOut, code := n.run(t, n.cwd, env, "approvers", "enroll", "alice")
	if code != 0 || !strings.Contains(out, "http://localhost:"+portOf(addr)+"/enroll/") {
		t.Fatalf("enroll: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "no server is listening at "+addr+" (approval.listen)") || !strings.Contains(errOut, "only while\ncountersign serve runs") {
		t.Errorf("enroll with no server does not say so:\n%s", errOut)
	}

	_, page := n.listening(t, n.cwd, n.env())
	pageAddr := strings.TrimPrefix(page, "http://localhost:")
	env = n.env("COUNTERSIGN_APPROVAL_LISTEN=127.0.0.1:" + pageAddr)
	out, errOut, code = n.run(t, n.cwd, env, "approvers", "enroll", "alice")
	if code != 0 || strings.Contains(errOut, "no server is listening") {
		t.Fatalf("enroll beside serve: exit %d\n%s%s", code, out, errOut)
	}
	if code, body := getWithHost(t, strings.TrimSpace(out), ""); code != http.StatusOK {
		t.Errorf("the printed link beside serve: %d\n%s", code, body)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// agents rotate gives an agent a new token, printed once, and agents
// remove takes one out; both edit mcp.yaml in place, comments kept, and a
// restarted serve takes only the new token and none of the removed agent.
// The last agent is not removed: the listener would turn anonymous.
func TestAgentsRotateAndRemove(t *testing.T) {
	n := newNewcomer(t)
	dir := filepath.Join(t.TempDir(), "countersign")
	file := filepath.Join(dir, "mcp.yaml")
	if out, errOut, code := n.run(t, n.cwd, n.env(), "init", dir); code != 0 {
		t.Fatalf("init: %s%s", out, errOut)
	}
	add := func(args ...string) string {
		t.Helper()
		out, errOut, code := n.run(t, n.cwd, n.env(), append([]string{"agents"}, append(args, "--config", file)...)...)
		token := strings.TrimSpace(out)
		if code != 0 || !strings.HasPrefix(token, "cs_") {
			t.Fatalf("agents %v: exit %d %q\n%s", args, code, out, errOut)
		}
		return token
	}
	oldA, tokenB := add("add", "ci-bot"), add("add", "nightly")
	before, _ := os.ReadFile(file)
	newA := add("rotate", "ci-bot")
	if newA == oldA {
		t.Fatal("rotate printed the old token")
	}
	if out, errOut, code := n.run(t, n.cwd, n.env(), "agents", "remove", "nightly", "--config", file); code != 0 || out != "" || !strings.Contains(errOut, "Restart serve") {
		t.Fatalf("agents remove: exit %d %q\n%s", code, out, errOut)
	}
	if _, errOut, code := n.run(t, n.cwd, n.env(), "agents", "remove", "ci-bot", "--config", file); code != 2 || !strings.Contains(errOut, `ci-bot is the only agent`) {
		t.Errorf("removing the last agent: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := n.run(t, n.cwd, n.env(), "agents", "rotate", "nobody", "--config", file); code != 2 || !strings.Contains(errOut, `no agent "nobody"`) {
		t.Errorf("rotating an unknown agent: exit %d\n%s", code, errOut)
	}
	after, _ := os.ReadFile(file)
	hash := func(token string) string { sum := sha256.Sum256([]byte(token)); return hex.EncodeToString(sum[:]) }
	if want := strings.Replace(strings.Replace(string(before), hash(oldA), hash(newA), 1),
		"    - {id: nightly, token_sha256: "+hash(tokenB)+"}\n", "", 1); string(after) != want {
		t.Errorf("the file changed beyond the two agents' lines:\n%s", after)
	}

	agentBase, _ := n.listening(t, n.cwd, n.env(), "--config", file)
	for _, token := range []string{oldA, tokenB} {
		req, _ := http.NewRequest(http.MethodGet, agentBase+"/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a rotated or removed token: %d, want 401", resp.StatusCode)
		}
	}
	hc := &http.Client{Transport: bearer{newA, http.DefaultTransport}}
	checkBalance(t, connect(t, &sdk.StreamableClientTransport{Endpoint: agentBase + "/mcp", MaxRetries: -1, HTTPClient: hc}, protocolVersions[0], nil))
}
