package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
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
