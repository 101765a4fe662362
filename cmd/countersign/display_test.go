package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Through the real gateway (the test upstream, the go-sdk client): an
// upstream call with more values and a longer string than the page once
// showed is put to the approver whole, in the stored display and in the
// log; one too large to show is refused before any request, recorded as
// call.rejected, and the export still verifies.
func TestGatewaySignsEveryArgumentAndRefusesWhatItCannotShow(t *testing.T) {
	// The upstream offers a free-form tool (echo) from the first listing
	// Countersign sees: add_tool runs before Countersign connects.
	record := filepath.Join(t.TempDir(), "upstream-record.jsonl")
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: record}))
	t.Cleanup(srv.Close)
	admin := connect(t, &sdk.StreamableClientTransport{Endpoint: srv.URL, MaxRetries: -1}, protocolVersions[0], nil)
	if res := servertest.CallTool(t, admin, "add_tool", map[string]any{"name": "echo"}); res.IsError {
		t.Fatalf("add_tool: %s", servertest.ResultText(res))
	}
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "notes", Prefix: "notes__", URL: srv.URL, ConnectTimeout: 10 * time.Second}}
		c.Tools["notes__echo"] = config.Tool{Level: "high", Approvers: []string{"role:ops"}}
	})
	ctx := context.Background()
	a := newAgent(t, p)

	args := map[string]any{}
	var want []string
	for i := range 75 {
		args[fmt.Sprintf("k%03d", i)] = i
		want = append(want, fmt.Sprintf("args.k%03d: %d", i, i))
	}
	long := strings.Repeat("long text ", 60) + "THE END"
	args["content"] = long
	args["zz_last"] = map[string]any{"of": []any{"many", "values"}}
	want = append(want, `args.content: "`+long+`"`, `args.zz_last.of[0]: "many"`, `args.zz_last.of[1]: "values"`)

	call := a.start("notes__echo", args)
	_, id := a.approvalURL(t, 1, call)
	req, err := p.Approvals().Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(req.Display, "\n")
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Fatalf("stored display lacks %q:\n%s", w, req.Display)
		}
	}
	if err := p.Approvals().Cancel(ctx, id, "test ends it"); err != nil {
		t.Fatal(err)
	}
	if res := await(t, call); !res.IsError {
		t.Fatalf("cancelled call: %s", servertest.ResultText(res))
	}

	over := map[string]any{}
	for i := range authzdetails.MaxShownValues + 2 {
		over[fmt.Sprintf("k%03d", i)] = i
	}
	res := servertest.CallTool(t, a.cs, "notes__echo", over)
	wantErr := fmt.Sprintf("arguments too large to show the approver in full: %d values, at most %d", authzdetails.MaxShownValues+2, authzdetails.MaxShownValues)
	if !res.IsError || !strings.Contains(servertest.ResultText(res), wantErr) {
		t.Fatalf("oversized call: isError=%v %s", res.IsError, servertest.ResultText(res))
	}
	if n, err := p.Approvals().PendingCount(ctx); err != nil || n != 0 {
		t.Fatalf("%d requests pending after the refusal (%v)", n, err)
	}
	if n := upstreamCalls(t, record)["echo"]; n != 0 {
		t.Fatalf("the upstream ran echo %d times", n)
	}

	p.stop()
	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", export)
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600)
	runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile)
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	var requested, rejected int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e audit.Entry
		if json.Unmarshal([]byte(line), &e) != nil || e.Tool != "notes__echo" {
			continue
		}
		switch e.Kind {
		case vocab.KindApprovalRequested:
			requested++
			got := strings.Split(e.Display, "\n")
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Fatalf("logged display lacks %q:\n%s", w, e.Display)
				}
			}
		case vocab.KindCallRejected:
			rejected++
			if !strings.Contains(e.Reason, wantErr) || e.Args != nil || e.Decision != string(vocab.LevelHigh) {
				t.Errorf("call.rejected %+v", e)
			}
		}
	}
	if requested != 1 || rejected != 1 {
		t.Fatalf("%d approval.requested, %d call.rejected for notes__echo; want 1 and 1", requested, rejected)
	}
}
