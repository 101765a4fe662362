package main

// Upstreams change with a reload (issue 26): the real binary in front of
// the reference MCP filesystem server from npm, its mcp.yaml rewritten
// while it serves, then SIGHUP; an agent on the official go-sdk client.

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// An upstream added by a reload starts: its tools appear and the agent
// is told (tools/list_changed). Changed (another root), it is replaced:
// its tools match their pins and stay offered, and calls reach the new
// process. One that cannot start refuses the reload, naming it, and the
// running one stays. Removed, its tools go and a call to one is refused.
func TestSIGHUPStartsChangesAndStopsUpstreams(t *testing.T) {
	t.Parallel() // a site and processes of its own: it may overlap the TypeScript client's wait
	server := filesystemServer(t)
	roots := [2]string{}
	for i := range roots {
		dir, err := filepath.EvalSymlinks(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "plan.txt"), []byte("plan of root "+string(rune('A'+i))), 0o600); err != nil {
			t.Fatal(err)
		}
		roots[i] = dir
	}
	files := func(root string) config.Upstream {
		return config.Upstream{Name: "files", Prefix: "files__", Command: []string{server, root}, ConnectTimeout: 60 * time.Second}
	}
	s := newSite(t, nil)
	n := s.start()
	var notified atomic.Int32
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: n.mcp, MaxRetries: -1}, protocolVersions[0], &sdk.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { notified.Add(1) },
	})
	listed := func() []string {
		t.Helper()
		list, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range list.Tools {
			names = append(names, tool.Name)
		}
		return names
	}
	read := func(root string) *sdk.CallToolResult {
		t.Helper()
		return servertest.CallTool(t, cs, "files__read_text_file", map[string]any{"path": filepath.Join(root, "plan.txt")})
	}
	if slices.Contains(listed(), "files__read_text_file") {
		t.Fatal("files__read_text_file offered before any upstream is configured")
	}

	s.rewrite(func(c *config.Config) { c.Upstreams = []config.Upstream{files(roots[0])} })
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload adding an upstream: %v", line)
	}
	waitNotified(t, &notified, 1)
	if got := listed(); !slices.Contains(got, "files__read_text_file") || !slices.Contains(got, "files__write_file") {
		t.Fatalf("tools after adding files: %v", got)
	}
	if res := read(roots[0]); res.IsError || servertest.ResultText(res) != "plan of root A" {
		t.Fatalf("read from the added upstream: %s", servertest.ResultText(res))
	}

	// Another root: a new process whose tools are those pinned when it
	// first connected, so they stay offered.
	s.rewrite(func(c *config.Config) { c.Upstreams = []config.Upstream{files(roots[1])} })
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload changing an upstream: %v", line)
	}
	if res := read(roots[1]); res.IsError || servertest.ResultText(res) != "plan of root B" {
		t.Fatalf("read from the replaced upstream: %s", servertest.ResultText(res))
	}
	if res := read(roots[0]); !res.IsError {
		t.Errorf("the replaced upstream still reads the old root: %s", servertest.ResultText(res))
	}
	if got := listed(); !slices.Contains(got, "files__read_text_file") {
		t.Fatalf("tools after the upstream changed (held against their pins?): %v", got)
	}

	s.rewrite(func(c *config.Config) {
		c.Upstreams = append(c.Upstreams, config.Upstream{Name: "broken", Command: []string{"false"} /* runs, and speaks no MCP */, ConnectTimeout: 10 * time.Second})
	})
	line := n.hup()
	if msg, _ := line["err"].(string); line["msg"] != "reload refused; the running configuration stays" || !strings.Contains(msg, "upstream broken does not start") {
		t.Fatalf("reload adding an upstream that cannot start: %v", line)
	}
	if res := read(roots[1]); res.IsError {
		t.Fatalf("read after a refused reload: %s", servertest.ResultText(res))
	}

	before := notified.Load()
	s.rewrite(func(c *config.Config) { c.Upstreams = nil })
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload removing the upstream: %v", line)
	}
	waitNotified(t, &notified, before+1)
	if got := listed(); slices.ContainsFunc(got, func(name string) bool { return strings.HasPrefix(name, "files__") }) {
		t.Fatalf("tools after removing files: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "files__read_text_file", Arguments: map[string]any{"path": filepath.Join(roots[1], "plan.txt")}})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("a call to a removed upstream's tool: %v %+v", err, res)
	}
	n.term()
	out := s.exportAndVerify()
	if len(out.policies()) != 4 {
		t.Errorf("policy.loaded entries: %d, want the start's and three reloads'", len(out.policies()))
	}
	if !slices.ContainsFunc(out.entries, func(e audit.Entry) bool {
		return e.Kind == vocab.KindCallRejected && e.Tool == "files__read_text_file" && e.Reason == "unknown tool"
	}) {
		t.Error("the call to the removed upstream's tool is not recorded as call.rejected (unknown tool)")
	}
}

// waitNotified waits until the agent has had at least want tools/list_changed.
func waitNotified(t *testing.T, notified *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for notified.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d tools/list_changed notifications after 30s, want %d", notified.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
