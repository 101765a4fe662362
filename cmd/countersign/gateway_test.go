package main

// End-to-end tests of Countersign as a gateway: a real MCP server (the
// go-sdk test upstream, run as a stdio subprocess of this test binary or
// served over Streamable HTTP) behind the assembled stack, an agent on the
// go-sdk client, and approvers in a real Chromium with virtual keys.

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/tools/upstream/pinstore"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// notesUpstream is the test upstream as a stdio subprocess of this binary.
func notesUpstream(t *testing.T, env ...string) (config.Upstream, string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "upstream-record.jsonl")
	u := config.Upstream{
		Name: "notes", Prefix: "notes__", Command: []string{os.Args[0]}, ConnectTimeout: 30 * time.Second,
		Env: map[string]string{
			upstreamtest.EnvMode: "stdio", upstreamtest.EnvRecord: record,
			"GORACE": "atexit_sleep_ms=0",
		},
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		u.Env[k] = v
	}
	return u, record
}

// upstreamCalls counts the calls the upstream itself recorded, per tool.
func upstreamCalls(t *testing.T, record string) map[string]int {
	t.Helper()
	recs, err := upstreamtest.ReadRecord(record)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range recs {
		if r.Event == upstreamtest.EventCalled {
			n[r.Tool]++
		}
	}
	return n
}

func TestGatewayReadsPassWritesWaitForATap(t *testing.T) {
	up, record := notesUpstream(t)
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{up}
		c.Tools["notes__add_tool"] = config.Tool{Level: "low"}
		c.Tools["notes__write_note"] = config.Tool{Level: "high", Approvers: []string{"role:ops"}}
	})
	ctx := context.Background()
	tab := enrollInBrowser(t, p.stack, "alice")

	a := newAgent(t, p)
	// One listener per protocol version clients speak today.
	notified := make([]atomic.Int32, len(protocolVersions))
	var listeners []*sdk.ClientSession
	for i, v := range protocolVersions {
		listeners = append(listeners, connect(t, &sdk.StreamableClientTransport{Endpoint: p.agent, MaxRetries: -1}, v, &sdk.ClientOptions{
			ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { notified[i].Add(1) },
		}))
	}
	approvalsSeen := 0

	t.Run("read-only passes at once", func(t *testing.T) {
		res := servertest.CallTool(t, a.cs, "notes__read_note", map[string]any{"name": "plan"})
		if res.IsError || !strings.HasPrefix(servertest.ResultText(res), "note plan") {
			t.Fatalf("read_note: %s", servertest.ResultText(res))
		}
		if sc, _ := res.StructuredContent.(map[string]any); sc["name"] != "plan" {
			t.Errorf("structuredContent did not come through: %#v", res.StructuredContent)
		}
	})

	t.Run("upstream errors reach the agent unchanged", func(t *testing.T) {
		res := servertest.CallTool(t, a.cs, "notes__fail", nil)
		if !res.IsError || servertest.ResultText(res) != "upstream failure" {
			t.Fatalf("fail: isError=%v %q", res.IsError, servertest.ResultText(res))
		}
	})

	t.Run("destructive waits and runs once when approved", func(t *testing.T) {
		call := a.start("notes__write_note", map[string]any{"name": "plan", "text": "<script>alert(1)</script> ship it"})
		approvalsSeen++
		url, id := a.approvalURL(t, approvalsSeen, call)
		if n := upstreamCalls(t, record)["write_note"]; n != 0 {
			t.Fatalf("the upstream ran write_note %d times before anyone approved", n)
		}
		req, err := p.Approvals().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var details []map[string]any
		json.Unmarshal(req.AuthorizationDetails, &details)
		if len(details) != 1 || details[0]["type"] != "mcp_tool_call" || details[0]["server"] != "notes" || details[0]["tool"] != "write_note" {
			t.Fatalf("authorization_details %s", req.AuthorizationDetails)
		}
		approvaltest.Open(t, tab, url)
		page := approvaltest.Text(t, tab, "#request")
		for _, want := range []string{"write_note", "<script>alert(1)</script> ship it", req.Code} {
			if !strings.Contains(page, want) {
				t.Errorf("request page lacks %q as text:\n%s", want, page)
			}
		}
		approvaltest.Approve(t, tab, url)
		res := await(t, call)
		if res.IsError || servertest.ResultText(res) != "wrote plan" {
			t.Fatalf("approved write_note: %s", servertest.ResultText(res))
		}
		if n := upstreamCalls(t, record)["write_note"]; n != 1 {
			t.Fatalf("the upstream ran write_note %d times, want 1", n)
		}
	})

	t.Run("a denial never reaches the upstream", func(t *testing.T) {
		call := a.start("notes__write_note", map[string]any{"name": "plan", "text": "again"})
		approvalsSeen++
		url, _ := a.approvalURL(t, approvalsSeen, call)
		approvaltest.Deny(t, tab, url)
		if res := await(t, call); !res.IsError || !strings.Contains(servertest.ResultText(res), "denied by alice") {
			t.Fatalf("denied write_note: %s", servertest.ResultText(res))
		}
		if n := upstreamCalls(t, record)["write_note"]; n != 1 {
			t.Fatalf("the upstream ran write_note %d times after a denial, want still 1", n)
		}
	})

	t.Run("a cancelled wait never reaches the upstream", func(t *testing.T) {
		// An agent of its own: a cancelled call may end its session.
		quitter := newAgent(t, p)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			params := &sdk.CallToolParams{Name: "notes__write_note", Arguments: map[string]any{"name": "x", "text": "y"}}
			params.SetProgressToken("cancel-me")
			params.Meta[sdk.MetaKeyLogLevel] = "notice"
			_, err := quitter.cs.CallTool(cctx, params)
			done <- err
		}()
		_, id := quitter.approvalURL(t, 1)
		cancel()
		<-done
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err := p.Approvals().Get(ctx, id)
			if err == nil && r.State == "cancelled" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %s is %v, want cancelled", id, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := upstreamCalls(t, record)["write_note"]; n != 1 {
			t.Fatalf("a cancelled call reached the upstream (%d write_note calls)", n)
		}
	})

	t.Run("list_changed reaches the agent", func(t *testing.T) {
		if res := servertest.CallTool(t, a.cs, "notes__add_tool", map[string]any{"name": "echo"}); res.IsError {
			t.Fatalf("add_tool: %s", servertest.ResultText(res))
		}
		// A tool added after the upstream's tools were pinned is held
		// until an admin accepts it. (The CLI would start an upstream
		// process of its own, without echo: accept through the store.)
		waitUntil(t, "notes__echo is listed", func() bool { _, ok := p.Tools().Lookup("notes__echo"); return ok })
		if res := servertest.CallTool(t, a.cs, "notes__echo", nil); !res.IsError || !strings.Contains(servertest.ResultText(res), "is new since its tools were pinned") {
			t.Fatalf("a tool added after pinning ran: %s", servertest.ResultText(res))
		}
		pins, err := pinstore.Open(ctx, p.DB(), p.Audit())
		if err != nil {
			t.Fatal(err)
		}
		listed, _ := p.Upstreams().Listed("notes")
		if _, err := pins.Accept(ctx, "notes", listed, "echo", "test"); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(20 * time.Second)
		for i, lc := range listeners {
			for {
				list, err := lc.ListTools(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, tool := range list.Tools {
					found = found || tool.Name == "notes__echo"
				}
				if found && notified[i].Load() > 0 {
					break
				}
				select {
				case <-time.After(100 * time.Millisecond):
				case <-deadline:
					t.Fatalf("%s: notes__echo listed: %v; notifications/tools/list_changed received: %d",
						protocolVersions[i], found, notified[i].Load())
				}
			}
		}
		// A tool nobody offers is refused (a protocol error from the MCP
		// library) and still recorded.
		if _, err := a.cs.CallTool(ctx, &sdk.CallToolParams{Name: "notes__nope"}); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("unknown tool: %v", err)
		}
	})

	t.Run("export verifies with the upstream calls in it", func(t *testing.T) {
		p.stop()
		dir := t.TempDir()
		export := filepath.Join(dir, "audit.jsonl")
		runCLI(t, p.cfg, "audit", "export", "--out", export)
		keyFile := filepath.Join(dir, "server.pub")
		os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600)
		runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile)
		raw, _ := os.ReadFile(export)
		kinds := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var e struct {
				Kind         vocab.Kind
				Tool, Reason string
				Result       json.RawMessage
			}
			if json.Unmarshal([]byte(line), &e) != nil || !strings.HasPrefix(e.Tool, "notes__") {
				continue
			}
			kinds[e.Tool+" "+string(e.Kind)]++
			if e.Kind == vocab.KindCallExecuted && !strings.Contains(string(e.Result), "result_sha256") {
				t.Errorf("upstream call.executed keeps no result hash: %s", line)
			}
		}
		for k, want := range map[string]int{
			"notes__read_note call.executed":       1,
			"notes__write_note call.executed":      1,
			"notes__write_note approval.denied":    1,
			"notes__write_note approval.cancelled": 1,
			"notes__nope call.rejected":            1,
		} {
			if kinds[k] != want {
				t.Errorf("%d × %q in the export, want %d (all: %v)", kinds[k], k, want, kinds)
			}
		}
	})
}

func TestGatewayCrashedUpstreamIsRestartedWithAClearErrorMeanwhile(t *testing.T) {
	up, record := notesUpstream(t, upstreamtest.EnvCrashAfter+"=1")
	s, base := startHTTP(t, testConfig(t, func(c *config.Config) { c.Upstreams = []config.Upstream{up} }))
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	if res := servertest.CallTool(t, cs, "notes__read_note", map[string]any{"name": "a"}); res.IsError {
		t.Fatalf("first call: %s", servertest.ResultText(res))
	}
	sawDown := false
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res := servertest.CallTool(t, cs, "notes__read_note", map[string]any{"name": "a"})
		if res.IsError {
			if !strings.Contains(servertest.ResultText(res), "upstream notes") {
				t.Fatalf("unclear error while the upstream is down: %s", servertest.ResultText(res))
			}
			sawDown = true
		} else if sawDown {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Each restarted process crashes again after one call, so a success
	// after the error proves a restart.
	if !sawDown {
		t.Fatal("never saw the upstream down")
	}
	if n := upstreamCalls(t, record)["read_note"]; n < 2 {
		t.Errorf("the restarted upstream recorded %d read_note calls", n)
	}
	if len(entries(t, s, vocab.KindCallFailed)) == 0 {
		t.Error("calls while the upstream was down are not audited as call.failed")
	}
}

func TestGatewayOverStreamableHTTPUpstream(t *testing.T) {
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{}))
	t.Cleanup(srv.Close)
	_, base := startHTTP(t, testConfig(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "web", Prefix: "web__", URL: srv.URL, ConnectTimeout: 10 * time.Second, DefaultLevel: "low"}}
	}))
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[1], nil)
	if res := servertest.CallTool(t, cs, "web__write_note", map[string]any{"name": "a", "text": "b"}); res.IsError || servertest.ResultText(res) != "wrote a" {
		t.Fatalf("write_note through default_level low: %s", servertest.ResultText(res))
	}
}

func TestConfigValidateAndPolicyTestKnowUpstreamTools(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mcp.yaml")
	yaml := `server: {data_dir: ` + filepath.Join(dir, "data") + `}
approvers: [{id: alice, name: Alice, roles: [ops]}]
upstreams:
  - name: notes
    command: [` + os.Args[0] + `]
    env: {COUNTERSIGN_UPSTREAMTEST: stdio, GORACE: "atexit_sleep_ms=0"}
tools:
  notes__write_note: {level: high, approvers: [role:ops]}
  notes__wirte_note: {level: low}
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(binPath, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Without --connect the file is valid: the upstream is not asked.
	if out, err := run("config", "validate", cfg); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	out, err := run("config", "validate", "--connect", cfg)
	if err == nil || !strings.Contains(out, `tools.notes__wirte_note: upstream notes offers no tool "wirte_note"`) ||
		!strings.Contains(out, "notes__write_note") {
		t.Fatalf("validate --connect: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		tool string
		want string
	}{
		{"notes__read_note", `decision:\s+low`},
		{"notes__add_tool", `decision:\s+high`},
		{"notes__write_note", `decision:\s+high`},
	} {
		out, err := run("policy", "test", "--config", cfg, "--connect", "--tool", tc.tool)
		if err != nil || !regexp.MustCompile(tc.want).MatchString(out) {
			t.Errorf("policy test %s: %v\n%s", tc.tool, err, out)
		}
	}
	if out, err := run("policy", "test", "--config", cfg, "--connect", "--tool", "notes__nope"); err == nil || !strings.Contains(out, "offers no tool") {
		t.Errorf("policy test of a tool the upstream lacks: %v\n%s", err, out)
	}
}

// The README's gateway example is what users copy: it must stay valid.
func TestReadmeGatewayExampleIsValid(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Guard an MCP server you already run")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no gateway example")
	}
	c, err := config.Parse([]byte(block), "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.CompilePolicy(c, nil); err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 1 || c.Upstreams[0].Prefix != "files__" || c.Upstreams[0].Command[0] != "npx" {
		t.Errorf("upstreams %+v", c.Upstreams)
	}
}
