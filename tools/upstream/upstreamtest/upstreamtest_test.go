package upstreamtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestMain(m *testing.M) {
	upstreamtest.Main() // serves stdio and exits when re-executed as the upstream
	os.Exit(m.Run())
}

// wait bounds every wait for the upstream.
const wait = 20 * time.Second

// peer is a client session to an upstream, with what the client received.
type peer struct {
	cs          *mcp.ClientSession
	record      string
	cmd         *exec.Cmd // stdio only
	progress    chan *mcp.ProgressNotificationParams
	listChanged chan struct{}
}

// transports are the ways tests reach the upstream: a re-exec of this test
// binary over stdio, speaking the go-sdk client's default protocol
// (2026-07-28) or the legacy initialize handshake, and Streamable HTTP on an
// httptest server (where the stateful handler makes the client fall back
// to 2025-11-25).
var transports = []string{"stdio", "stdio-2025-11-25", "http"}

func forEachTransport(t *testing.T, f func(t *testing.T, p *peer)) {
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) { f(t, connect(t, kind)) })
	}
}

// connect starts an upstream of the given kind recording to a fresh file
// and connects a client to it. env is added to a stdio upstream's
// environment.
func connect(t *testing.T, kind string, env ...string) *peer {
	t.Helper()
	return connectRecord(t, kind, filepath.Join(t.TempDir(), "record.jsonl"), env...)
}

// connectRecord is connect with the record file given.
func connectRecord(t *testing.T, kind, record string, env ...string) *peer {
	t.Helper()
	p := &peer{
		record:      record,
		progress:    make(chan *mcp.ProgressNotificationParams, 200),
		listChanged: make(chan struct{}, 10),
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "upstreamtest-test", Version: "0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			p.progress <- req.Params
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			p.listChanged <- struct{}{}
		},
	})
	var (
		tr          mcp.Transport
		opts        *mcp.ClientSessionOptions
		wantVersion = "2025-11-25"
	)
	switch kind {
	case "stdio", "stdio-2025-11-25":
		p.cmd = exec.Command(os.Args[0])
		p.cmd.Env = append(os.Environ(),
			upstreamtest.EnvMode+"=stdio",
			upstreamtest.EnvRecord+"="+p.record)
		p.cmd.Env = append(p.cmd.Env, childRaceEnv())
		p.cmd.Env = append(p.cmd.Env, env...)
		p.cmd.Stderr = os.Stderr
		tr = &mcp.CommandTransport{Command: p.cmd}
		if kind == "stdio-2025-11-25" {
			opts = &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"}
		} else {
			wantVersion = "2026-07-28"
		}
	case "http":
		ts := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: p.record}))
		t.Cleanup(ts.Close)
		tr = &mcp.StreamableClientTransport{Endpoint: ts.URL}
	default:
		t.Fatalf("unknown transport %q", kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cs, err := client.Connect(ctx, tr, opts)
	if err != nil {
		t.Fatalf("connect %s: %v", kind, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	if got := cs.InitializeResult().ProtocolVersion; got != wantVersion {
		t.Fatalf("%s: protocol version %s, want %s", kind, got, wantVersion)
	}
	p.cs = cs
	return p
}

// childRaceEnv stops a child built with -race from sleeping a second at
// exit (the race runtime's atexit_sleep_ms), keeping other GORACE options.
func childRaceEnv() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

func (p *peer) call(t *testing.T, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	return p.callParams(t, &mcp.CallToolParams{Name: name, Arguments: args})
}

func (p *peer) callParams(t *testing.T, params *mcp.CallToolParams) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := p.cs.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("call %s: %v", params.Name, err)
	}
	return res
}

func (p *peer) tools(t *testing.T) map[string]*mcp.Tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := p.cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("list tools: %v", err)
	}
	tools := map[string]*mcp.Tool{}
	for _, tool := range res.Tools {
		tools[tool.Name] = tool
	}
	return tools
}

func (p *peer) records(t *testing.T) []upstreamtest.Record {
	t.Helper()
	recs, err := upstreamtest.ReadRecord(p.record)
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	return recs
}

// waitRecord polls the record until ok holds for it.
func (p *peer) waitRecord(t *testing.T, what string, ok func([]upstreamtest.Record) bool) []upstreamtest.Record {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		recs := p.records(t)
		if ok(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never showed %s; it holds %s", what, dump(recs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("want one content block, got %s", dump(res.Content))
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("want text content, got %T", res.Content[0])
	}
	return tc.Text
}

// events returns tool/event pairs of recs.
func events(recs []upstreamtest.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Tool+"/"+r.Event)
	}
	return out
}

// schemaProp returns the property prop of a tool's input schema as the
// client sees it (a decoded JSON object).
func schemaProp(t *testing.T, tool *mcp.Tool, prop string) map[string]any {
	t.Helper()
	sch, ok := tool.InputSchema.(map[string]any)
	if !ok {
		t.Fatalf("%s: input schema is %T", tool.Name, tool.InputSchema)
	}
	props, _ := sch["properties"].(map[string]any)
	p, ok := props[prop].(map[string]any)
	if !ok {
		t.Fatalf("%s: no property %q in %s", tool.Name, prop, dump(sch))
	}
	return p
}

func TestListTools(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		tools := p.tools(t)
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range tools {
				if !yield(n) {
					return
				}
			}
		})
		if want := []string{"add_tool", "fail", "read_note", "slow", "write_note"}; !slices.Equal(names, want) {
			t.Fatalf("tools %v, want %v", names, want)
		}
		type hints struct {
			readOnly    bool
			destructive *bool // nil: not sent
		}
		yes, no := true, false
		want := map[string]hints{
			"read_note":  {true, &no},
			"write_note": {false, &yes},
			"slow":       {true, nil},
			"fail":       {true, nil},
			"add_tool":   {false, nil},
		}
		for name, h := range want {
			tool := tools[name]
			if tool.Annotations == nil {
				t.Fatalf("%s: no annotations", name)
			}
			if tool.Annotations.ReadOnlyHint != h.readOnly {
				t.Errorf("%s: readOnlyHint %v, want %v", name, tool.Annotations.ReadOnlyHint, h.readOnly)
			}
			if !reflect.DeepEqual(tool.Annotations.DestructiveHint, h.destructive) {
				t.Errorf("%s: destructiveHint %s, want %s", name, dump(tool.Annotations.DestructiveHint), dump(h.destructive))
			}
			sch, ok := tool.InputSchema.(map[string]any)
			if !ok || sch["type"] != "object" {
				t.Errorf("%s: input schema %s, want an object schema", name, dump(tool.InputSchema))
			}
			if tool.Description == "" {
				t.Errorf("%s: no description", name)
			}
		}
		if out, ok := tools["read_note"].OutputSchema.(map[string]any); !ok || out["type"] != "object" {
			t.Errorf("read_note: output schema %s", dump(tools["read_note"].OutputSchema))
		}
		for _, name := range []string{"read_note", "write_note"} {
			req, _ := tools[name].InputSchema.(map[string]any)["required"].([]any)
			if name == "read_note" && !reflect.DeepEqual(req, []any{"name"}) ||
				name == "write_note" && !reflect.DeepEqual(req, []any{"name", "text"}) {
				t.Errorf("%s: required %v", name, req)
			}
		}
		steps := schemaProp(t, tools["slow"], "steps")
		if steps["type"] != "integer" || steps["minimum"] != 1.0 || steps["maximum"] != 100.0 || steps["default"] != 5.0 {
			t.Errorf("slow.steps schema %s", dump(steps))
		}
		if stepMS := schemaProp(t, tools["slow"], "step_ms"); stepMS["type"] != "integer" || stepMS["default"] != 200.0 {
			t.Errorf("slow.step_ms schema %s", dump(stepMS))
		}
		if name := schemaProp(t, tools["add_tool"], "name"); name["pattern"] != "^[a-z_]{1,20}$" {
			t.Errorf("add_tool.name schema %s", dump(name))
		}
		if recs := p.records(t); len(recs) != 0 {
			t.Errorf("listing tools recorded %s", dump(recs))
		}
	})
}

func TestNotes(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		res := p.callParams(t, &mcp.CallToolParams{
			Name:      "write_note",
			Arguments: map[string]any{"name": "n1", "text": "hello"},
			Meta:      mcp.Meta{"trace": "t-1"},
		})
		if res.IsError || text(t, res) != "wrote n1" {
			t.Fatalf("write_note: %s", dump(res))
		}

		res = p.call(t, "read_note", map[string]any{"name": "n1"})
		if res.IsError || text(t, res) != "note n1: hello" {
			t.Fatalf("read_note: %s", dump(res))
		}
		if want := map[string]any{"name": "n1", "text": "hello", "found": true}; !reflect.DeepEqual(res.StructuredContent, want) {
			t.Errorf("read_note structured %s, want %s", dump(res.StructuredContent), dump(want))
		}
		res = p.call(t, "read_note", map[string]any{"name": "nope"})
		if res.IsError || text(t, res) != "note nope: (empty)" {
			t.Fatalf("read_note of a missing note: %s", dump(res))
		}
		if want := map[string]any{"name": "nope", "text": "", "found": false}; !reflect.DeepEqual(res.StructuredContent, want) {
			t.Errorf("read_note structured %s, want %s", dump(res.StructuredContent), dump(want))
		}

		// Missing required arguments are a tool error from the go-sdk's
		// validation, before the handler (so not recorded).
		if res := p.call(t, "write_note", map[string]any{"name": "n2"}); !res.IsError {
			t.Errorf("write_note without text: %s", dump(res))
		}

		recs := p.records(t)
		if got, want := events(recs), []string{"write_note/called", "read_note/called", "read_note/called"}; !slices.Equal(got, want) {
			t.Fatalf("record %v, want %v", got, want)
		}
		if want := map[string]any{"name": "n1", "text": "hello"}; !reflect.DeepEqual(recs[0].Arguments, want) {
			t.Errorf("write_note recorded arguments %s", dump(recs[0].Arguments))
		}
		if recs[0].Meta["trace"] != "t-1" {
			t.Errorf("write_note recorded meta %s, want trace t-1", dump(recs[0].Meta))
		}
		if !reflect.DeepEqual(recs[1].Arguments, map[string]any{"name": "n1"}) {
			t.Errorf("read_note recorded arguments %s", dump(recs[1].Arguments))
		}
		for _, r := range recs {
			if time.Since(r.Time) > time.Minute || r.Time.After(time.Now()) {
				t.Errorf("record time %v", r.Time)
			}
		}
	})
}

func TestSlowProgress(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 3, "step_ms": 10}}
		params.SetProgressToken("tok-1")
		res := p.callParams(t, params)
		if res.IsError || text(t, res) != "slow: completed 3 steps" {
			t.Fatalf("slow: %s", dump(res))
		}
		// Notifications and the result travel separately; the progress
		// may be handled after CallTool returns.
		for i := 1; i <= 3; i++ {
			select {
			case n := <-p.progress:
				if n.ProgressToken != "tok-1" || n.Progress != float64(i) || n.Total != 3 || n.Message != fmt.Sprintf("step %d/3", i) {
					t.Errorf("progress %d: %s", i, dump(n))
				}
			case <-time.After(wait):
				t.Fatalf("no progress notification %d", i)
			}
		}

		// Defaults apply when an argument is left out; without a token
		// there is no progress.
		res = p.call(t, "slow", map[string]any{"step_ms": 1})
		if res.IsError || text(t, res) != "slow: completed 5 steps" {
			t.Fatalf("slow with default steps: %s", dump(res))
		}
		select {
		case n := <-p.progress:
			t.Errorf("progress without a token: %s", dump(n))
		case <-time.After(50 * time.Millisecond):
		}

		if res := p.call(t, "slow", map[string]any{"steps": 101}); !res.IsError {
			t.Errorf("slow with 101 steps: %s", dump(res))
		}

		recs := p.records(t)
		if got, want := events(recs), []string{"slow/called", "slow/completed", "slow/called", "slow/completed"}; !slices.Equal(got, want) {
			t.Fatalf("record %v, want %v", got, want)
		}
		if recs[0].Meta["progressToken"] != "tok-1" {
			t.Errorf("slow recorded meta %s, want the progress token", dump(recs[0].Meta))
		}
		if !reflect.DeepEqual(recs[2].Arguments, map[string]any{"step_ms": 1.0}) {
			t.Errorf("recorded arguments %s, want them as sent (no defaults)", dump(recs[2].Arguments))
		}
	})
}

func TestSlowCancel(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 100, "step_ms": 100}}
		params.SetProgressToken("tok-cancel")
		errc := make(chan error, 1)
		go func() {
			_, err := p.cs.CallTool(ctx, params)
			errc <- err
		}()
		select {
		case <-p.progress: // the call is running upstream
		case <-time.After(wait):
			t.Fatal("no progress from slow")
		}
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled call returned %v, want context.Canceled", err)
			}
		case <-time.After(wait):
			t.Fatal("cancelled call did not return")
		}
		recs := p.waitRecord(t, "slow/cancelled", func(recs []upstreamtest.Record) bool {
			return slices.Contains(events(recs), "slow/cancelled")
		})
		if got, want := events(recs), []string{"slow/called", "slow/cancelled"}; !slices.Equal(got, want) {
			t.Fatalf("record %v, want %v", got, want)
		}

		// The session outlives the cancelled call.
		if res := p.call(t, "fail", nil); !res.IsError {
			t.Fatalf("fail after a cancel: %s", dump(res))
		}
	})
}

func TestFail(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		res := p.call(t, "fail", nil)
		if !res.IsError || text(t, res) != "upstream failure" {
			t.Fatalf("fail: %s", dump(res))
		}
		recs := p.records(t)
		if got, want := events(recs), []string{"fail/called"}; !slices.Equal(got, want) {
			t.Fatalf("record %v, want %v", got, want)
		}
		if !reflect.DeepEqual(recs[0].Arguments, map[string]any{}) {
			t.Errorf("fail recorded arguments %s, want {}", dump(recs[0].Arguments))
		}
	})
}

func TestAddTool(t *testing.T) {
	forEachTransport(t, func(t *testing.T, p *peer) {
		res := p.call(t, "add_tool", map[string]any{"name": "echo_it"})
		if res.IsError || text(t, res) != "added echo_it" {
			t.Fatalf("add_tool: %s", dump(res))
		}
		select {
		case <-p.listChanged:
		case <-time.After(wait):
			t.Fatal("no notifications/tools/list_changed after add_tool")
		}
		tools := p.tools(t)
		echo := tools["echo_it"]
		if echo == nil {
			t.Fatalf("echo_it not listed; tools %s", dump(tools))
		}
		if echo.Annotations == nil || !echo.Annotations.ReadOnlyHint || echo.Annotations.DestructiveHint == nil || *echo.Annotations.DestructiveHint {
			t.Errorf("echo_it annotations %s", dump(echo.Annotations))
		}
		if len(tools) != 6 {
			t.Errorf("%d tools after add_tool, want 6", len(tools))
		}

		args := map[string]any{"a": 1.0, "b": "x"}
		res = p.call(t, "echo_it", args)
		if res.IsError || text(t, res) != `{"a":1,"b":"x"}` {
			t.Fatalf("echo_it: %s", dump(res))
		}
		if !reflect.DeepEqual(res.StructuredContent, args) {
			t.Errorf("echo_it structured %s", dump(res.StructuredContent))
		}

		// A name outside the pattern fails validation; a built-in name is
		// refused by the handler. Neither changes the tool list.
		if res := p.call(t, "add_tool", map[string]any{"name": "Bad-Name"}); !res.IsError {
			t.Errorf("add_tool Bad-Name: %s", dump(res))
		}
		if res := p.call(t, "add_tool", map[string]any{"name": "write_note"}); !res.IsError {
			t.Errorf("add_tool write_note: %s", dump(res))
		}
		if tools := p.tools(t); len(tools) != 6 || tools["write_note"].Annotations.ReadOnlyHint {
			t.Errorf("tools after refused add_tool calls: %s", dump(tools))
		}

		recs := p.records(t)
		if got, want := events(recs), []string{"add_tool/called", "echo_it/called", "add_tool/called"}; !slices.Equal(got, want) {
			t.Fatalf("record %v, want %v", got, want)
		}
		if !reflect.DeepEqual(recs[1].Arguments, args) {
			t.Errorf("echo_it recorded arguments %s", dump(recs[1].Arguments))
		}
	})
}

func TestCrashAfter(t *testing.T) {
	p := connect(t, "stdio", upstreamtest.EnvCrashAfter+"=2")
	for _, name := range []string{"a", "b"} {
		if res := p.call(t, "read_note", map[string]any{"name": name}); res.IsError {
			t.Fatalf("read_note %s: %s", name, dump(res))
		}
	}
	done := make(chan struct{})
	go func() { _ = p.cs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("session still open after the crash")
	}
	if st := p.cmd.ProcessState; st == nil || st.ExitCode() != 3 {
		t.Fatalf("upstream state %v, want exit status 3", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := p.cs.CallTool(ctx, &mcp.CallToolParams{Name: "fail"}); err == nil {
		t.Fatal("call to a crashed upstream succeeded")
	}
	if got, want := events(p.records(t)), []string{"read_note/called", "read_note/called"}; !slices.Equal(got, want) {
		t.Fatalf("record %v, want %v", got, want)
	}
}

// TestMainExit checks Main's exit statuses.
func TestMainExit(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{[]string{upstreamtest.EnvMode + "=stdio"}, 0}, // stdin is /dev/null: EOF at once
		{[]string{upstreamtest.EnvMode + "=http"}, 2},
		{[]string{upstreamtest.EnvMode + "=stdio", upstreamtest.EnvCrashAfter + "=0"}, 2},
		{[]string{upstreamtest.EnvMode + "=stdio", upstreamtest.EnvCrashAfter + "=x"}, 2},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childRaceEnv())
		cmd.Env = append(cmd.Env, tc.env...)
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if code != tc.want {
			t.Errorf("%v: exit status %d, want %d", tc.env, code, tc.want)
		}
	}
}

// TestRecordShared has two upstream processes append to one record file
// with concurrent calls: every line arrives whole.
func TestRecordShared(t *testing.T) {
	record := filepath.Join(t.TempDir(), "shared.jsonl")
	const perProcess = 20
	peers := []*peer{connectRecord(t, "stdio", record), connectRecord(t, "stdio", record)}
	var wg sync.WaitGroup
	for pi, p := range peers {
		for i := range perProcess {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				name := fmt.Sprintf("p%d_%d", pi, i)
				res, err := p.cs.CallTool(ctx, &mcp.CallToolParams{
					Name:      "write_note",
					Arguments: map[string]any{"name": name, "text": strings.Repeat("x", 3000)},
				})
				if err != nil || res.IsError {
					t.Errorf("write_note %s: %v %s", name, err, dump(res))
				}
			})
		}
	}
	wg.Wait()
	recs, err := upstreamtest.ReadRecord(record)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		name, _ := r.Arguments["name"].(string)
		if r.Tool != "write_note" || r.Event != upstreamtest.EventCalled || seen[name] || len(r.Arguments["text"].(string)) != 3000 {
			t.Errorf("unexpected record %s", dump(r))
		}
		seen[name] = true
	}
	if len(seen) != 2*perProcess {
		t.Errorf("%d distinct records, want %d", len(seen), 2*perProcess)
	}
}

func TestReadRecordMissing(t *testing.T) {
	recs, err := upstreamtest.ReadRecord(filepath.Join(t.TempDir(), "none.jsonl"))
	if recs != nil || err != nil {
		t.Fatalf("ReadRecord of a missing file: %v, %v", recs, err)
	}
}
