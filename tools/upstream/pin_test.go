package upstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/pinstore"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// hostile is the mutable test upstream over Streamable HTTP, and a client
// of its own with which the test changes its tools behind the gateway.
type hostile struct {
	cfg    config.Upstream
	record string
	admin  *sdk.ClientSession
}

func startHostile(t *testing.T) *hostile {
	t.Helper()
	record := filepath.Join(t.TempDir(), "record.jsonl")
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: record, Mutable: true}))
	t.Cleanup(srv.Close)
	client := sdk.NewClient(&sdk.Implementation{Name: "hostile-admin", Version: "0"}, nil)
	admin, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: srv.URL, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return &hostile{
		cfg:    config.Upstream{Name: "notes", Prefix: "notes__", URL: srv.URL, ConnectTimeout: 10 * time.Second},
		record: record, admin: admin,
	}
}

// mutate changes a tool of the upstream; the go-sdk then sends
// notifications/tools/list_changed to the gateway.
func (h *hostile) mutate(t *testing.T, op, tool, to string) {
	t.Helper()
	res, err := h.admin.CallTool(context.Background(), &sdk.CallToolParams{Name: "mutate",
		Arguments: map[string]any{"op": op, "tool": tool, "to": to}})
	if err != nil || res.IsError {
		t.Fatalf("mutate %s %s: %v %+v", op, tool, err, res)
	}
}

func (h *hostile) calls(t *testing.T, tool string) int {
	t.Helper()
	recs, err := upstreamtest.ReadRecord(h.record)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Tool == tool && r.Event == upstreamtest.EventCalled {
			n++
		}
	}
	return n
}

// pinDB is a real database and audit log with the pins in it.
type pinDB struct {
	pins *pinstore.Store
	log  *audit.Log
	pub  string
}

func openPins(t *testing.T) *pinDB {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Connect(ctx, filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, db.DB, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pins, err := pinstore.Open(ctx, db, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(); db.Close() })
	return &pinDB{pins: pins, log: log, pub: log.PublicKey()}
}

// entries returns the log's entries of kind.
func (p *pinDB) entries(t *testing.T, kind vocab.Kind) []audit.Entry {
	t.Helper()
	all, err := p.log.Since(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range all {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// pinResult is the result member of tool.* entries.
type pinResult struct {
	Server     string   `json:"server"`
	Tool       string   `json:"upstream_tool"`
	Definition string   `json:"definition_sha256"`
	Previous   string   `json:"previous_sha256"`
	Changed    []string `json:"changed"`
	Policy     string   `json:"policy"`
	AcceptedBy string   `json:"accepted_by"`
}

func resultOf(t *testing.T, e audit.Entry) pinResult {
	t.Helper()
	var r pinResult
	if err := json.Unmarshal(e.Result, &r); err != nil {
		t.Fatalf("%s result %s: %v", e.Kind, e.Result, err)
	}
	return r
}

// changesOf counts the tool.changed entries per exposed tool.
func (p *pinDB) changesOf(t *testing.T) map[string]int {
	n := map[string]int{}
	for _, e := range p.entries(t, vocab.KindToolChanged) {
		n[e.Tool]++
	}
	return n
}

func startPinned(t *testing.T, u config.Upstream, p *pinDB) (*upstream.Manager, *tools.Catalog) {
	t.Helper()
	cat := tools.NewCatalog()
	m, err := upstream.Start(context.Background(), []config.Upstream{u}, cat, upstream.Options{
		Pins: p.pins, RecheckHeld: 50 * time.Millisecond,
		Policy: func(name string) bool { return name == "notes__rug" },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, cat
}

// waitFor polls until cond holds; the upstream's list_changed arrives
// asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func held(cat *tools.Catalog, name string) bool {
	s, ok := cat.Lookup(name)
	return ok && s.Held != nil
}

func offered(cat *tools.Catalog, name string) bool {
	s, ok := cat.Lookup(name)
	return ok && s.Held == nil
}

func detailHash(t *testing.T, call *tools.Call) string {
	t.Helper()
	var d []map[string]any
	if err := json.Unmarshal(call.Details, &d); err != nil || len(d) != 1 {
		t.Fatalf("details %s", call.Details)
	}
	h, _ := d[0]["definition_sha256"].(string)
	return h
}

// The whole life of pins against an upstream that changes its tools: the
// first connection pins every tool; a relabelled, re-described or
// re-schemaed tool is held, its calls refused, a call prepared under the
// old definition refused at run time, each change recorded once however
// often the upstream re-lists; tools that did not change keep working; an
// accept made through the store (as the CLI does, from another process)
// lets the tool go without a restart; a rename holds the new name and
// records the removed one with the policy that now names nothing. The log
// verifies.
func TestPinsHoldChangedToolsUntilAccepted(t *testing.T) {
	ctx := context.Background()
	h := startHostile(t)
	p := openPins(t)
	m, cat := startPinned(t, h.cfg, p)

	pinned := p.entries(t, vocab.KindToolPinned)
	if len(pinned) != 7 {
		t.Fatalf("first connection recorded %d tool.pinned entries, want 7 (one per tool)", len(pinned))
	}
	pins, err := p.pins.Pinned(ctx, "notes")
	if err != nil || len(pins) != 7 {
		t.Fatalf("pins %v %v", err, pins)
	}
	for _, e := range pinned {
		r := resultOf(t, e)
		if r.Server != "notes" || "notes__"+r.Tool != e.Tool || pins[r.Tool].SHA256 != r.Definition || len(r.Definition) != 64 {
			t.Errorf("tool.pinned %s: %s", e.Tool, e.Result)
		}
	}

	rug, _ := cat.Lookup("notes__rug")
	before, err := rug.Prepare(ctx, map[string]any{"target": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if got := detailHash(t, before); got != pins["rug"].SHA256 {
		t.Fatalf("definition_sha256 in the authorization details is %q, want the pin %s", got, pins["rug"].SHA256)
	}

	t.Run("relabelled read-only: held, refused, a call prepared before refused at run", func(t *testing.T) {
		h.mutate(t, "relabel", "rug", "")
		waitFor(t, "notes__rug is held", func() bool { return held(cat, "notes__rug") })
		spec, _ := cat.Lookup("notes__rug")
		var he *upstream.HeldError
		if err := spec.Held(ctx); !errors.As(err, &he) ||
			err.Error() != "tool rug of upstream notes changed since it was pinned (annotations): an admin must run `countersign upstreams accept notes rug`" {
			t.Fatalf("held: %v", err)
		}
		if _, err := spec.Prepare(ctx, map[string]any{}); err == nil {
			t.Fatal("a held tool prepared a call")
		}
		_, err := rug.Run(ctx, before)
		if err == nil || !strings.Contains(err.Error(), "changed since this call was approved") {
			t.Fatalf("a call prepared under the old definition ran: %v", err)
		}
		if n := h.calls(t, "rug"); n != 0 {
			t.Fatalf("the upstream ran rug %d times", n)
		}
		if n := p.changesOf(t)["notes__rug"]; n != 1 {
			t.Fatalf("tool.changed of notes__rug recorded %d times, want 1", n)
		}
		if st := m.Status()[0]; len(st.Held) != 1 || st.Held[0] != "notes__rug" {
			t.Errorf("status %+v", st)
		}
	})

	t.Run("unchanged tools keep working; a change is recorded once over re-lists", func(t *testing.T) {
		res, err := run(t, ctx, cat, "notes__read_note", map[string]any{"name": "a"})
		if err != nil || !strings.HasPrefix(textOf(res), "note a") {
			t.Fatalf("read_note: %v %+v", err, res)
		}
		// add_tool makes the upstream re-list: the new tool is held, rug's
		// change is not recorded again.
		if _, err := run(t, ctx, cat, "notes__add_tool", map[string]any{"name": "zed"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "notes__zed is listed", func() bool { _, ok := cat.Lookup("notes__zed"); return ok })
		if !held(cat, "notes__zed") {
			t.Fatal("a tool added after pinning is offered")
		}
		changes := p.changesOf(t)
		if changes["notes__rug"] != 1 || changes["notes__zed"] != 1 {
			t.Fatalf("tool.changed per tool: %v", changes)
		}
		zed := p.entries(t, vocab.KindToolChanged)[1]
		if r := resultOf(t, zed); r.Previous != "" || r.Definition == "" || r.Changed[0] != "new" {
			t.Errorf("tool.changed of a new tool: %s", zed.Result)
		}
	})

	t.Run("schema and description changes are held until accepted, then run without a restart", func(t *testing.T) {
		h.mutate(t, "schema", "rug", "")
		h.mutate(t, "describe", "rug", "Harmless, honestly.")
		waitFor(t, "rug's description change is seen", func() bool {
			spec, ok := cat.Lookup("notes__rug")
			return ok && spec.Def.Description == "Harmless, honestly."
		})
		spec, _ := cat.Lookup("notes__rug")
		if err := spec.Held(ctx); err == nil || !strings.Contains(err.Error(), "(schema, annotations, description)") {
			t.Fatalf("held: %v", err)
		}
		listed, _ := m.Listed("notes")
		accepted, err := p.pins.Accept(ctx, "notes", listed, "notes__rug", "tester")
		if err != nil || len(accepted) != 1 {
			t.Fatalf("accept: %v %+v", err, accepted)
		}
		waitFor(t, "notes__rug is offered again", func() bool { return offered(cat, "notes__rug") })
		now, _ := cat.Lookup("notes__rug")
		call, err := now.Prepare(ctx, map[string]any{"target": "staging"})
		if err != nil {
			t.Fatal(err)
		}
		if got := detailHash(t, call); got != accepted[0].Listed || got == pins["rug"].SHA256 {
			t.Fatalf("definition_sha256 %s after accepting %s", got, accepted[0].Listed)
		}
		if res, err := now.Run(ctx, call); err != nil || textOf(res.MCP) != "pulled staging" {
			t.Fatalf("accepted rug: %v %+v", err, res)
		}
		if _, err := now.Run(ctx, before); err == nil {
			t.Fatal("a call prepared under the first definition ran under the accepted one")
		}
		acc := p.entries(t, vocab.KindToolAccepted)
		if len(acc) != 1 {
			t.Fatalf("%d tool.accepted entries", len(acc))
		}
		if r := resultOf(t, acc[0]); r.AcceptedBy != "tester" || r.Previous != pins["rug"].SHA256 || r.Definition != accepted[0].Listed {
			t.Errorf("tool.accepted %s", acc[0].Result)
		}
		if !held(cat, "notes__zed") {
			t.Error("accepting rug let zed go too")
		}
	})

	t.Run("a rename holds the new name and records the removed one with its policy", func(t *testing.T) {
		h.mutate(t, "rename", "rug", "rug2")
		waitFor(t, "notes__rug2 is listed", func() bool { _, ok := cat.Lookup("notes__rug2"); return ok })
		if _, ok := cat.Lookup("notes__rug"); ok {
			t.Fatal("notes__rug is still in the catalog")
		}
		if !held(cat, "notes__rug2") {
			t.Fatal("the renamed tool is offered")
		}
		var removed *audit.Entry
		for _, e := range p.entries(t, vocab.KindToolChanged) {
			if e.Tool == "notes__rug" && resultOf(t, e).Definition == "" {
				removed = &e
			}
		}
		if removed == nil || resultOf(t, *removed).Policy != "tools.notes__rug" || !strings.Contains(removed.Reason, "the policy tools.notes__rug now names no tool") {
			t.Fatalf("removal entry %+v", removed)
		}
	})

	var export strings.Builder
	if err := p.log.Export(ctx, &export, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(strings.NewReader(export.String()), p.pub, verify.Options{}); err != nil {
		t.Fatalf("audit verify of a log with tool.* entries: %v", err)
	}
}
