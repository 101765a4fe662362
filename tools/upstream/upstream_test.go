package upstream_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestMain(m *testing.M) {
	upstreamtest.Main() // returns only when not re-executed as the upstream
	os.Exit(m.Run())
}

// stdioUpstream runs this test binary as a real stdio MCP server.
func stdioUpstream(t *testing.T, name string, env ...string) (config.Upstream, string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "record.jsonl")
	u := config.Upstream{
		Name: name, Prefix: name + "__", Command: []string{os.Args[0]}, ConnectTimeout: 20 * time.Second,
		Env: map[string]string{upstreamtest.EnvMode: "stdio", upstreamtest.EnvRecord: record, "GORACE": "atexit_sleep_ms=0"},
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		u.Env[k] = v
	}
	return u, record
}

func start(t testing.TB, ups ...config.Upstream) (*upstream.Manager, *tools.Catalog) {
	t.Helper()
	cat := tools.NewCatalog()
	m, err := upstream.Start(context.Background(), ups, cat, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, cat
}

func run(t *testing.T, ctx context.Context, cat *tools.Catalog, name string, args map[string]any) (*mcp.CallToolResult, error) {
	t.Helper()
	spec, ok := cat.Lookup(name)
	if !ok {
		t.Fatalf("catalog has no %s", name)
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	res, err := spec.Run(ctx, call)
	if err != nil {
		return nil, err
	}
	return res.MCP, nil
}

func textOf(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestStdioUpstreamToolsAreOfferedUnderThePrefixAsTheyAre(t *testing.T) {
	u, _ := stdioUpstream(t, "notes")
	_, cat := start(t, u)
	var names []string
	for _, s := range cat.Specs() {
		names = append(names, s.Def.Name)
	}
	if got := strings.Join(names, ","); got != "notes__add_tool,notes__fail,notes__read_note,notes__slow,notes__write_note" {
		t.Fatalf("offered %s", got)
	}
	read, _ := cat.Lookup("notes__read_note")
	write, _ := cat.Lookup("notes__write_note")
	if !read.ReadOnly() || write.ReadOnly() || read.Source != "notes" {
		t.Errorf("read-only %v/%v source %q", read.ReadOnly(), write.ReadOnly(), read.Source)
	}
	if h := write.Def.Annotations.DestructiveHint; h == nil || !*h {
		t.Error("write_note lost its destructiveHint")
	}
	if read.Def.Description == "" || len(read.Def.RawOutputSchema) == 0 || !strings.Contains(string(read.Def.RawInputSchema), `"name"`) {
		t.Errorf("definition lost parts: %+v", read.Def)
	}
	raw, _ := json.Marshal(read.Def)
	if !strings.Contains(string(raw), `"inputSchema":{`) || !strings.Contains(string(raw), `"outputSchema":{`) {
		t.Errorf("tools/list entry %s", raw)
	}
}

func TestCallsReachTheUpstreamWithDetailsForTheApprover(t *testing.T) {
	u, record := stdioUpstream(t, "notes")
	_, cat := start(t, u)
	spec, _ := cat.Lookup("notes__write_note")
	call, err := spec.Prepare(context.Background(), map[string]any{"name": "a", "text": "<b>hi</b>"})
	if err != nil {
		t.Fatal(err)
	}
	var details []map[string]any
	if err := json.Unmarshal(call.Details, &details); err != nil || len(details) != 1 {
		t.Fatalf("details %s", call.Details)
	}
	if d := details[0]; d["type"] != "mcp_tool_call" || d["server"] != "notes" || d["tool"] != "write_note" ||
		d["arguments"].(map[string]any)["text"] != "<b>hi</b>" {
		t.Errorf("details %v", d)
	}
	res, err := spec.Run(context.Background(), call)
	if err != nil || res.MCP == nil || textOf(res.MCP) != "wrote a" {
		t.Fatalf("run: %v %+v", err, res)
	}
	recs, err := upstreamtest.ReadRecord(record)
	if err != nil || len(recs) != 1 || recs[0].Tool != "write_note" {
		t.Fatalf("record %v %+v", err, recs)
	}
	failed, err := run(t, context.Background(), cat, "notes__fail", nil)
	if err != nil || !failed.IsError || textOf(failed) != "upstream failure" {
		t.Errorf("fail: %v %+v", err, failed)
	}
}

func TestProgressComesBackAndCancellationGoesUpstream(t *testing.T) {
	u, record := stdioUpstream(t, "notes")
	_, cat := start(t, u)

	var mu sync.Mutex
	var got []float64
	ctx := tools.WithProgress(context.Background(), func(p, total float64, msg string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p)
	})
	if _, err := run(t, ctx, cat, "notes__slow", map[string]any{"steps": 3, "step_ms": 10}); err != nil {
		t.Fatal(err)
	}
	// Progress notifications may be handled after the result arrives, and
	// the go-sdk server can drop one sent just before its result; what
	// arrives comes in order.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		seen := slices.Clone(got)
		mu.Unlock()
		if len(seen) >= 2 && slices.IsSorted(seen) && seen[0] == 1 && seen[len(seen)-1] <= 3 {
			break
		}
		if len(seen) > 3 || time.Now().After(deadline) {
			t.Fatalf("progress %v, want 1,2[,3]", seen)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(150 * time.Millisecond); cancel() }()
	if _, err := run(t, ctx, cat, "notes__slow", map[string]any{"steps": 100, "step_ms": 100}); err == nil {
		t.Fatal("a cancelled call succeeded")
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		recs, _ := upstreamtest.ReadRecord(record)
		if n := len(recs); n > 0 && recs[n-1].Event == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream never saw the cancellation: %+v", recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListChangedReachesTheCatalog(t *testing.T) {
	u, _ := stdioUpstream(t, "notes")
	_, cat := start(t, u)
	changed := make(chan struct{}, 8)
	cat.OnChange(func() { changed <- struct{}{} })
	if _, err := run(t, context.Background(), cat, "notes__add_tool", map[string]any{"name": "echo"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		if _, ok := cat.Lookup("notes__echo"); ok {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("notes__echo never appeared")
		}
	}
	res, err := run(t, context.Background(), cat, "notes__echo", map[string]any{"x": 1})
	if err != nil || !strings.Contains(textOf(res), `"x"`) {
		t.Errorf("echo: %v %+v", err, res)
	}
}

func TestCrashedStdioUpstreamIsRestartedAndAnswersClearlyMeanwhile(t *testing.T) {
	u, record := stdioUpstream(t, "notes", "COUNTERSIGN_UPSTREAMTEST_CRASH_AFTER=1")
	_, cat := start(t, u)
	if _, err := run(t, context.Background(), cat, "notes__write_note", map[string]any{"name": "a", "text": "1"}); err != nil {
		t.Fatal(err)
	}
	// The upstream exits right after answering: until it is back, calls
	// get a clear error rather than hanging.
	sawDown := false
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, err := run(t, context.Background(), cat, "notes__read_note", map[string]any{"name": "a"})
		if err != nil {
			if !strings.Contains(err.Error(), "upstream notes") {
				t.Fatalf("unclear error %v", err)
			}
			sawDown = true
		} else if sawDown {
			break // restarted
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawDown {
		t.Fatal("never saw the upstream down")
	}
	// Each restarted process crashes again after one call, so the success
	// after the error is what proves the restart, with the record.
	recs, _ := upstreamtest.ReadRecord(record)
	if len(recs) < 2 {
		t.Errorf("the restarted upstream was never called: %+v", recs)
	}
}

func TestHTTPUpstreamWithHeadersFromTheEnvironment(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	h := upstreamtest.Handler(upstreamtest.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u := config.Upstream{Name: "web", Prefix: "web__", URL: srv.URL, ConnectTimeout: 10 * time.Second,
		Headers: map[string]string{"Authorization": "Bearer ${UPSTREAM_TEST_TOKEN}"}}
	cat := tools.NewCatalog()
	m, err := upstream.Start(context.Background(), []config.Upstream{u}, cat, upstream.Options{
		Getenv: func(k string) string {
			if k == "UPSTREAM_TEST_TOKEN" {
				return "s3cret"
			}
			return ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := run(t, context.Background(), cat, "web__read_note", map[string]any{"name": "x"})
	if err != nil || !strings.HasPrefix(textOf(res), "note x") {
		t.Fatalf("%v %+v", err, res)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range auth {
		if a != "Bearer s3cret" {
			t.Fatalf("Authorization %q", a)
		}
	}
}

func TestUnreachableUpstreams(t *testing.T) {
	dead := config.Upstream{Name: "gone", Prefix: "gone__", URL: "http://127.0.0.1:1/mcp", ConnectTimeout: 2 * time.Second}
	m, cat := start(t, dead)
	if len(cat.Specs()) != 0 || m.Status()[0].Up || m.Status()[0].Err == "" {
		t.Errorf("status %+v", m.Status())
	}
	dead.Required = true
	if _, err := upstream.Start(context.Background(), []config.Upstream{dead}, tools.NewCatalog(), upstream.Options{}); err == nil ||
		!strings.Contains(err.Error(), "upstream gone (required)") {
		t.Errorf("required upstream: %v", err)
	}
	missing := config.Upstream{Name: "nocmd", Prefix: "nocmd__", Command: []string{"/no/such/program"}, ConnectTimeout: 2 * time.Second, Required: true}
	if _, err := upstream.Start(context.Background(), []config.Upstream{missing}, tools.NewCatalog(), upstream.Options{}); err == nil {
		t.Error("a missing command started")
	}
}

func TestExposedNamesMustBeValid(t *testing.T) {
	u, _ := stdioUpstream(t, "notes")
	u.Prefix = strings.Repeat("p", 58) // + "read_note" is 67 characters
	_, err := upstream.Start(context.Background(), []config.Upstream{u}, tools.NewCatalog(), upstream.Options{})
	if err == nil || !strings.Contains(err.Error(), "not a valid tool name") {
		t.Fatalf("err %v", err)
	}
}

func TestSpecsRefusesWhatCannotBeExposed(t *testing.T) {
	u := config.Upstream{Name: "x", Prefix: "x__"}
	obj := map[string]any{"type": "object"}
	for _, tc := range []struct {
		name string
		list []*sdk.Tool
		want string
	}{
		{"bad character", []*sdk.Tool{{Name: "a.b", InputSchema: obj}}, "not a valid tool name"},
		{"empty name", []*sdk.Tool{{Name: "", InputSchema: obj}}, "not a valid tool name"},
		{"twice", []*sdk.Tool{{Name: "a", InputSchema: obj}, {Name: "a", InputSchema: obj}}, "listed twice"},
		{"schema not an object", []*sdk.Tool{{Name: "a", InputSchema: []any{1}}}, "input schema"},
		{"schema of a string", []*sdk.Tool{{Name: "a", InputSchema: map[string]any{"type": "string"}}}, `"type": "object"`},
		{"nil entry", []*sdk.Tool{nil}, "empty entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upstream.Specs(u, tc.list, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzSpecs feeds arbitrary tool lists (names, schemas, annotations) to the
// conversion: nothing an upstream sends may crash the gateway or yield an
// exposed name outside the allowed pattern.
func FuzzSpecs(f *testing.F) {
	f.Add([]byte(`[{"name":"read","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}}]`))
	f.Add([]byte(`[{"name":"a b","inputSchema":{"type":"object","properties":{"x":{"type":"string"}}}}]`))
	f.Add([]byte(`[{"name":"w","inputSchema":{"type":"object"},"outputSchema":{"type":"object"},"annotations":{"destructiveHint":false,"title":"T"}}]`))
	f.Add([]byte(`[{"name":"\u202e","inputSchema":{}},{"name":"x","inputSchema":null}]`))
	u := config.Upstream{Name: "up", Prefix: "up__"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var list []*sdk.Tool
		if json.Unmarshal(data, &list) != nil {
			return
		}
		specs, err := upstream.Specs(u, list, nil)
		if err != nil {
			return
		}
		for _, s := range specs {
			if !upstream.NamePattern.MatchString(s.Def.Name) || !strings.HasPrefix(s.Def.Name, "up__") {
				t.Fatalf("exposed %q", s.Def.Name)
			}
			if _, err := json.Marshal(s.Def); err != nil {
				t.Fatalf("definition does not encode: %v", err)
			}
			call, err := s.Prepare(context.Background(), map[string]any{"k": "v"})
			if err != nil || !json.Valid(call.Details) {
				t.Fatalf("prepare: %v", err)
			}
		}
	})
}
