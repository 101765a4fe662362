package main

// End-to-end tests of pinned upstream tools: the mutable test upstream
// (served over Streamable HTTP in this process, so that serve and the CLI
// reach the same server) changes its tools behind a running Countersign;
// an agent on the go-sdk client, approvers with soft keys on the page, and
// the countersign binary for `upstreams diff` and `upstreams accept`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// pinSite is a running Countersign in front of the mutable upstream, with
// alice's and bob's keys enrolled.
type pinSite struct {
	*product
	cfgFile  string // the configuration, for the CLI
	record   string // the upstream's record of calls
	admin    *sdk.ClientSession
	page     *approvaltest.Page
	keys     []*approvaltest.SoftKey
	agent    *sdk.ClientSession
	notified atomic.Int32 // list_changed notifications the agent received
}

func startPinSite(t *testing.T, rug config.Tool) *pinSite {
	t.Helper()
	record := filepath.Join(t.TempDir(), "upstream-record.jsonl")
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: record, Mutable: true}))
	t.Cleanup(srv.Close)
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "notes", Prefix: "notes__", URL: srv.URL, ConnectTimeout: 10 * time.Second}}
		c.Tools["notes__rug"] = rug
	})
	s := &pinSite{product: p, record: record}
	raw, err := config.Encode(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.cfgFile = filepath.Join(t.TempDir(), "mcp.yaml")
	if err := os.WriteFile(s.cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s.admin = connect(t, &sdk.StreamableClientTransport{Endpoint: srv.URL, MaxRetries: -1}, protocolVersions[0], nil)
	u, _ := url.Parse(p.page)
	s.page = approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page)
	for _, who := range []string{"alice", "bob"} {
		key := approvaltest.NewSoftKey(t, "localhost", p.page)
		link, err := p.Approvals().CreateEnrollment(context.Background(), who)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.page.Enroll(link, key); err != nil {
			t.Fatal(err)
		}
		s.keys = append(s.keys, key)
	}
	s.agent = connect(t, &sdk.StreamableClientTransport{Endpoint: p.agent, MaxRetries: -1}, protocolVersions[0], &sdk.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { s.notified.Add(1) },
	})
	return s
}

// mutate changes a tool of the upstream behind Countersign's back.
func (s *pinSite) mutate(t *testing.T, op, tool, to string) {
	t.Helper()
	res := servertest.CallTool(t, s.admin, "mutate", map[string]any{"op": op, "tool": tool, "to": to})
	if res.IsError {
		t.Fatalf("mutate %s %s: %s", op, tool, servertest.ResultText(res))
	}
}

// cli runs the countersign binary on the site's configuration; it returns
// stdout and stderr together, and the exit code.
func (s *pinSite) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath, append(args, "--config", s.cfgFile)...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("countersign %s: %v", strings.Join(args, " "), err)
	return "", 0
}

// offers reports whether the agent's tools/list has name.
func (s *pinSite) offers(t *testing.T, name string) bool {
	t.Helper()
	list, err := s.agent.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(list.Tools, func(tool *sdk.Tool) bool { return tool.Name == name })
}

// heldInCatalog waits until the gateway has re-listed and holds name.
func (s *pinSite) waitHeld(t *testing.T, name string) {
	t.Helper()
	waitUntil(t, name+" is held", func() bool {
		spec, ok := s.Tools().Lookup(name)
		return ok && spec.Held != nil
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// approveAll approves request id with both keys.
func (s *pinSite) approveAll(t *testing.T, id string) {
	t.Helper()
	for _, k := range s.keys {
		if _, err := s.page.Decide(id, "approve", k); err != nil {
			t.Fatalf("approve %s: %v", id, err)
		}
	}
}

// pollCall calls a poll-mode tool and returns the request it raised.
func (s *pinSite) pollCall(t *testing.T, name string, args map[string]any) string {
	t.Helper()
	res := servertest.CallTool(t, s.agent, name, args)
	var out struct {
		Status    string `json:"status"`
		AuthReqID string `json:"auth_req_id"`
	}
	if res.IsError || json.Unmarshal([]byte(servertest.ResultText(res)), &out) != nil || out.Status != "authorization_pending" {
		t.Fatalf("%s did not wait for approvers: %s", name, servertest.ResultText(res))
	}
	return out.AuthReqID
}

// toolCounts counts the entries of kind per tool.
func toolCounts(t *testing.T, s *stack, kind vocab.Kind) map[string]int {
	n := map[string]int{}
	for _, e := range entries(t, s, kind) {
		n[e.Tool]++
	}
	return n
}

func TestPinnedUpstreamToolsChangeOnlyWithAnAdminsAcceptance(t *testing.T) {
	ctx := context.Background()
	s := startPinSite(t, config.Tool{Level: "critical", Approvers: []string{"role:treasury"}, Quorum: 2, Wait: "poll"})

	// (a) The first connection pins every tool, one tool.pinned each.
	if n := toolCounts(t, s.stack, vocab.KindToolPinned); len(n) != 7 || n["notes__rug"] != 1 {
		t.Fatalf("tool.pinned per tool: %v", n)
	}
	readNote := func(t *testing.T) {
		t.Helper()
		if res := servertest.CallTool(t, s.agent, "notes__read_note", map[string]any{"name": "plan"}); res.IsError || !strings.HasPrefix(servertest.ResultText(res), "note plan") {
			t.Fatalf("an unchanged tool stopped working: %s", servertest.ResultText(res))
		}
	}
	readNote(t)

	t.Run("a call approved under one definition does not run under another", func(t *testing.T) {
		id := s.pollCall(t, "notes__rug", map[string]any{"target": "prod"})
		r, err := s.Approvals().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		pinned := resultOfEntry(t, entries(t, s.stack, vocab.KindToolPinned), "notes__rug")
		if !strings.Contains(string(r.AuthorizationDetails), `"definition_sha256":"`+pinned+`"`) {
			t.Fatalf("authorization_details %s lack the pinned definition %s", r.AuthorizationDetails, pinned)
		}
		s.mutate(t, "relabel", "rug", "")
		s.waitHeld(t, "notes__rug")
		s.approveAll(t, id)
		waitUntil(t, "the approved call has its outcome", func() bool {
			return slices.ContainsFunc(entries(t, s.stack, vocab.KindCallFailed), func(e audit.Entry) bool { return e.RequestID == id })
		})
		if n := upstreamCalls(t, s.record)["rug"]; n != 0 {
			t.Fatalf("the upstream ran rug %d times under a definition nobody approved", n)
		}
	})

	t.Run("a tool relabelled read-only is held and its calls refused", func(t *testing.T) {
		if s.offers(t, "notes__rug") {
			t.Fatal("the relabelled tool is offered")
		}
		res := servertest.CallTool(t, s.agent, "notes__rug", map[string]any{"target": "prod"})
		want := "tool rug of upstream notes changed since it was pinned (annotations): an admin must run `countersign upstreams accept notes rug`"
		if !res.IsError || !strings.Contains(servertest.ResultText(res), want) {
			t.Fatalf("call of a held tool: %s", servertest.ResultText(res))
		}
		denied := entries(t, s.stack, vocab.KindCallDenied)
		if len(denied) == 0 || denied[len(denied)-1].Tool != "notes__rug" || !strings.Contains(denied[len(denied)-1].Reason, want) {
			t.Fatalf("the refused call is not recorded: %+v", denied)
		}
		if n := toolCounts(t, s.stack, vocab.KindToolChanged)["notes__rug"]; n != 1 {
			t.Fatalf("tool.changed of notes__rug: %d entries, want 1", n)
		}
		if n := upstreamCalls(t, s.record)["rug"]; n != 0 {
			t.Fatalf("the upstream ran rug %d times", n)
		}
		readNote(t)
	})

	t.Run("schema and description changes: diff shows them, accept lets the tool go without a restart", func(t *testing.T) {
		s.mutate(t, "schema", "rug", "")
		s.mutate(t, "describe", "rug", "Harmless, honestly.")
		waitUntil(t, "the gateway sees the new description", func() bool {
			spec, ok := s.Tools().Lookup("notes__rug")
			return ok && spec.Def.Description == "Harmless, honestly."
		})
		res := servertest.CallTool(t, s.agent, "notes__rug", map[string]any{"target": "prod"})
		if !res.IsError || !strings.Contains(servertest.ResultText(res), "(schema, annotations, description)") {
			t.Fatalf("call of a held tool: %s", servertest.ResultText(res))
		}
		out, code := s.cli(t, "upstreams", "diff", "notes")
		for _, want := range []string{"tool rug of upstream notes changed since it was pinned", `-  "description": "Pull the rug`,
			`+  "description": "Harmless, honestly."`, `+    "readOnlyHint": true`, `"extra"`} {
			if !strings.Contains(out, want) {
				t.Errorf("upstreams diff lacks %q:\n%s", want, out)
			}
		}
		if code != 1 {
			t.Errorf("upstreams diff exited %d with differences, want 1", code)
		}
		notified := s.notified.Load()
		if out, code := s.cli(t, "upstreams", "accept", "notes", "rug"); code != 0 || !strings.Contains(out, "accepted: tool rug of upstream notes changed") {
			t.Fatalf("upstreams accept: exit %d\n%s", code, out)
		}
		// Accepting again is already done, not a failure; a tool that is
		// neither listed nor pinned is a typo, and says so.
		if out, code := s.cli(t, "upstreams", "accept", "notes"); code != 0 || !strings.Contains(out, "nothing to accept") {
			t.Errorf("a second upstreams accept: exit %d, want 0\n%s", code, out)
		}
		if out, code := s.cli(t, "upstreams", "accept", "notes", "no_such_tool"); code == 0 || !strings.Contains(out, "no_such_tool") {
			t.Errorf("accepting a tool nobody lists: exit %d, want an error\n%s", code, out)
		}
		waitUntil(t, "the agent is offered notes__rug and told so", func() bool {
			return s.notified.Load() > notified && s.offers(t, "notes__rug")
		})
		// Accepted, it is judged by its policy as before: read-only or
		// not, it waits for two approvers.
		id := s.pollCall(t, "notes__rug", map[string]any{"target": "staging", "extra": "x"})
		if n := upstreamCalls(t, s.record)["rug"]; n != 0 {
			t.Fatalf("the accepted tool ran before anyone approved (%d calls)", n)
		}
		s.approveAll(t, id)
		waitUntil(t, "the approved call ran", func() bool {
			return slices.ContainsFunc(entries(t, s.stack, vocab.KindCallExecuted), func(e audit.Entry) bool { return e.RequestID == id })
		})
		if n := upstreamCalls(t, s.record)["rug"]; n != 1 {
			t.Fatalf("the upstream ran rug %d times, want 1", n)
		}
		acc := entries(t, s.stack, vocab.KindToolAccepted)
		if len(acc) != 1 || acc[0].Tool != "notes__rug" || !strings.Contains(string(acc[0].Result), `"accepted_by":"`+cliActor()+`"`) {
			t.Fatalf("tool.accepted %+v", acc)
		}
		if out, code := s.cli(t, "upstreams", "diff", "notes"); code != 0 || !strings.Contains(out, "all 7 tools are as pinned") {
			t.Errorf("upstreams diff after accept: exit %d\n%s", code, out)
		}
		readNote(t)
	})

	t.Run("a renamed critical tool is held under its new name; its old policy is reported", func(t *testing.T) {
		s.mutate(t, "rename", "rug", "rug2")
		s.waitHeld(t, "notes__rug2")
		if s.offers(t, "notes__rug2") || s.offers(t, "notes__rug") {
			t.Fatal("the renamed tool is offered")
		}
		res := servertest.CallTool(t, s.agent, "notes__rug2", map[string]any{"target": "prod"})
		if !res.IsError || !strings.Contains(servertest.ResultText(res), "tool rug2 of upstream notes is new since its tools were pinned: an admin must run `countersign upstreams accept notes rug2`") {
			t.Fatalf("call of the renamed tool: %s", servertest.ResultText(res))
		}
		if n := upstreamCalls(t, s.record)["rug2"]; n != 0 {
			t.Fatalf("the upstream ran rug2 %d times", n)
		}
		// Another re-list records nothing again.
		if res := servertest.CallTool(t, s.admin, "add_tool", map[string]any{"name": "zed"}); res.IsError {
			t.Fatal(servertest.ResultText(res))
		}
		s.waitHeld(t, "notes__zed")
		var removed []audit.Entry
		for _, e := range entries(t, s.stack, vocab.KindToolChanged) {
			if e.Tool == "notes__rug" && strings.Contains(string(e.Result), `"definition_sha256":""`) {
				removed = append(removed, e)
			}
		}
		if len(removed) != 1 || !strings.Contains(string(removed[0].Result), `"policy":"tools.notes__rug"`) ||
			!strings.Contains(removed[0].Reason, "the policy tools.notes__rug now names no tool") {
			t.Fatalf("removal of notes__rug recorded as %+v", removed)
		}
		if n := toolCounts(t, s.stack, vocab.KindToolChanged)["notes__rug2"]; n != 1 {
			t.Fatalf("tool.changed of notes__rug2: %d entries, want 1", n)
		}
		// (h) /readyz stays ready and names the policy that names nothing
		// and the held tools.
		resp, err := http.Get(s.product.page + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `WARN  policy tools.notes__rug: names no tool: upstream notes offers no tool "rug"`) ||
			!strings.Contains(string(body), "WARN  upstream notes: held until an admin accepts") || !strings.Contains(string(body), "notes__rug2") {
			t.Fatalf("/readyz %d:\n%s", resp.StatusCode, body)
		}
		readNote(t)
	})

	// (g) The log with tool.pinned, tool.changed and tool.accepted
	// verifies (exportAndVerify fails the test unless audit verify exits 0).
	changed := len(entries(t, s.stack, vocab.KindToolChanged))
	s.stop()
	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, s.cfg, "audit", "export", "--out", export)
	keyFile := filepath.Join(dir, "server.pub")
	if err := os.WriteFile(keyFile, []byte(runCLI(t, s.cfg, "audit", "pubkey")), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, s.cfg, "audit", "verify", export, "--key", keyFile)
	raw, _ := os.ReadFile(export)
	for _, kind := range []vocab.Kind{vocab.KindToolPinned, vocab.KindToolChanged, vocab.KindToolAccepted} {
		if !bytes.Contains(raw, []byte(`"kind":"`+kind+`"`)) {
			t.Errorf("the export has no %s entry", kind)
		}
	}

	// (h) A restart warns of the policy that names nothing, and records
	// no change again.
	var logged bytes.Buffer
	again, err := assemble(ctx, s.cfg, slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !strings.Contains(logged.String(), "policy for a tool no upstream offers") || !strings.Contains(logged.String(), "tools.notes__rug") {
		t.Errorf("serve start did not warn of tools.notes__rug:\n%s", logged.String())
	}
	if n := len(entries(t, again, vocab.KindToolChanged)); n != changed {
		t.Errorf("a restart recorded %d tool.changed entries again", n-changed)
	}
}

// resultOfEntry returns the definition_sha256 of tool's entry among es.
func resultOfEntry(t *testing.T, es []audit.Entry, tool string) string {
	t.Helper()
	for _, e := range es {
		if e.Tool == tool {
			var r struct {
				Definition string `json:"definition_sha256"`
			}
			json.Unmarshal(e.Result, &r)
			return r.Definition
		}
	}
	t.Fatalf("no entry for %s", tool)
	return ""
}

// A standing grant given under one definition of an upstream tool lets no
// call through once the tool's definition changed, even after an admin
// accepted the change: the approvers granted calls of the tool they saw.
func TestGrantGivenUnderOneDefinitionDoesNotCoverAnother(t *testing.T) {
	s := startPinSite(t, config.Tool{Level: "high", Approvers: []string{"alice"}, Wait: "poll",
		Grants: config.Grants{MaxDuration: 15 * time.Minute, MaxCalls: 5}})
	args := map[string]any{"target": "staging"}
	id := s.pollCall(t, "notes__rug", args)
	if _, err := s.page.ApproveWithGrant(id, s.keys[0], 10*time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the approved call ran", func() bool { return upstreamCalls(t, s.record)["rug"] == 1 })
	if res := servertest.CallTool(t, s.agent, "notes__rug", args); res.IsError || servertest.ResultText(res) != "pulled staging" {
		t.Fatalf("a call within the grant did not run at once: %s", servertest.ResultText(res))
	}
	s.mutate(t, "describe", "rug", "Now also deletes backups.")
	s.waitHeld(t, "notes__rug")
	if out, code := s.cli(t, "upstreams", "accept", "notes"); code != 0 {
		t.Fatalf("upstreams accept: exit %d\n%s", code, out)
	}
	waitUntil(t, "notes__rug is offered again", func() bool { return s.offers(t, "notes__rug") })
	s.pollCall(t, "notes__rug", args) // waits for a human: the grant does not cover it
	if n := upstreamCalls(t, s.record)["rug"]; n != 2 {
		t.Fatalf("the upstream ran rug %d times, want 2 (the approved call and the one within the grant)", n)
	}
}
