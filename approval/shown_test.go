package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// mcpRequest is a request for an upstream call with these arguments.
func mcpRequest(args map[string]any) NewRequest {
	nr := paymentRequest("alice")
	nr.Tool = "files__write_file"
	raw, _ := json.Marshal(args)
	nr.Args, _ = digest.ParseArgs(raw)
	nr.AuthorizationDetails, _ = json.Marshal([]map[string]any{{
		"type": "mcp_tool_call", "server": "files", "tool": "write_file", "arguments": args,
	}})
	return nr
}

// manyValues is n arguments k000 … with values 0 …, and the display
// lines they must give.
func manyValues(n int) (map[string]any, []string) {
	args := map[string]any{}
	var lines []string
	for i := range n {
		args[fmt.Sprintf("k%03d", i)] = i
		lines = append(lines, fmt.Sprintf("args.k%03d: %d", i, i))
	}
	return args, lines
}

// More values than the old 60-line bound, and a string longer than the
// old 200-character bound, are signed whole: the stored display and the
// approval.requested entry's display hold every one.
func TestDisplayHoldsEveryArgumentWhole(t *testing.T) {
	f := newFixture(t)
	args, lines := manyValues(80)
	long := strings.Repeat("0123456789", 150) + "\u202e" + "end"
	args["content"] = long
	req, err := f.svc.Create(context.Background(), mcpRequest(args))
	if err != nil {
		t.Fatal(err)
	}
	entry, ok := f.rec.Last(vocab.KindApprovalRequested)
	if !ok {
		t.Fatal("no approval.requested entry")
	}
	lines = append(lines, `args.content: "`+strings.Repeat("0123456789", 150)+`\u202Eend"`)
	// The stored text is the renderer's, whose safety authzdetails tests.
	rendered, err := authzdetails.Render(splitDetails(t, string(mcpRequest(args).AuthorizationDetails)), nil, req.Tool, req.Agent, req.Code)
	if err != nil {
		t.Fatal(err)
	}
	for name, display := range map[string]string{"stored": req.Display, "audit": entry.Display} {
		got := strings.Split(display, "\n")
		for _, want := range lines {
			if !slices.Contains(got, want) {
				t.Fatalf("%s display lacks %q:\n%s", name, want, display)
			}
		}
		if strings.Contains(display, "not shown") || strings.Contains(display, "more characters") {
			t.Fatalf("%s display elides:\n%s", name, display)
		}
		if display != rendered {
			t.Fatalf("%s display is not the rendered text:\n%s\nwant\n%s", name, display, rendered)
		}
	}
}

// A call over a limit is refused with the limit and the figure named, and
// Create raises nothing: no row, no entry, nothing to show.
func TestShowLimitsRefuseBeforeARequest(t *testing.T) {
	tooMany, _ := manyValues(authzdetails.MaxShownValues + 1)
	atMost, _ := manyValues(authzdetails.MaxShownValues)
	bulky := map[string]any{}
	for i := range 9 {
		bulky[fmt.Sprintf("part%d", i)] = strings.Repeat("x", authzdetails.MaxShownChars)
	}
	escaped := map[string]any{"v": strings.Repeat("\U000E0041", authzdetails.MaxShownChars)} // 10 bytes shown per character
	for _, tc := range []struct {
		name string
		args map[string]any
		want string // "" when it is within the limits
	}{
		{"values at the bound", atMost, ""},
		{"one value too many", tooMany, fmt.Sprintf("%d values, at most %d", authzdetails.MaxShownValues+1, authzdetails.MaxShownValues)},
		{"a string at the bound", map[string]any{"s": strings.Repeat("é", authzdetails.MaxShownChars)}, ""},
		{"a string too long", map[string]any{"s": strings.Repeat("é", authzdetails.MaxShownChars+1)},
			fmt.Sprintf("a value of %d characters (args.s), at most %d", authzdetails.MaxShownChars+1, authzdetails.MaxShownChars)},
		{"a key too long", map[string]any{strings.Repeat("k", authzdetails.MaxShownChars+5): 1},
			fmt.Sprintf("a value of %d characters (a key), at most %d", authzdetails.MaxShownChars+5, authzdetails.MaxShownChars)},
		{"too much text in all", bulky, fmt.Sprintf("bytes of text, at most %d", authzdetails.MaxShownBytes)},
		{"escapes count as shown", escaped, fmt.Sprintf("bytes of text, at most %d", authzdetails.MaxShownBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			nr := mcpRequest(tc.args)
			err := CheckShown(nr.AuthorizationDetails, nr.Args.JSON(), nr.Tool, nr.Agent)
			req, cerr := f.svc.Create(context.Background(), nr)
			if tc.want == "" {
				if err != nil || cerr != nil {
					t.Fatalf("within the limits, refused: %v / %v", err, cerr)
				}
				if len(req.Display) > authzdetails.MaxShownBytes {
					t.Fatalf("display of %d bytes", len(req.Display))
				}
				return
			}
			var le *authzdetails.ShowLimitError
			if !errors.As(err, &le) || !strings.HasPrefix(err.Error(), "arguments too large to show the approver in full: ") ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckShown: %v, want %q", err, tc.want)
			}
			if !errors.Is(cerr, authzdetails.ErrTooLargeToShow) || !errors.Is(cerr, ErrInvalidRequest) || !strings.Contains(cerr.Error(), tc.want) {
				t.Fatalf("Create: %v", cerr)
			}
			if kinds := f.rec.Kinds(""); len(kinds) != 0 {
				t.Fatalf("entries recorded for a refused request: %v", kinds)
			}
			var n int
			if err := f.db.QueryRow(`SELECT count(*) FROM approval_requests`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d requests stored (%v)", n, err)
			}
		})
	}
}

// The count is of the agent's arguments: a member the server adds to an
// upstream call's detail (a pinned definition's hash) is shown, and
// counts as text, but not as one of the values.
func TestShowLimitsCountTheArgumentValues(t *testing.T) {
	args, _ := manyValues(authzdetails.MaxShownValues)
	nr := mcpRequest(args)
	nr.AuthorizationDetails, _ = json.Marshal([]map[string]any{{
		"type": "mcp_tool_call", "server": "files", "tool": "write_file", "arguments": args,
		"definition_sha256": strings.Repeat("ab", 32),
	}})
	if err := CheckShown(nr.AuthorizationDetails, nr.Args.JSON(), nr.Tool, nr.Agent); err != nil {
		t.Fatalf("%d argument values and a server member: %v", authzdetails.MaxShownValues, err)
	}
	got, err := authzdetails.Render(splitDetails(t, string(nr.AuthorizationDetails)), nil, "t", "a", "C")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "\ndetail.definition_sha256: \""+strings.Repeat("ab", 32)+"\"\n") {
		t.Fatalf("display\n%s", got)
	}
}

// A tool without details is bound by the same limits on its arguments.
func TestShowLimitsBindArgumentsWithoutDetails(t *testing.T) {
	args, _ := manyValues(authzdetails.MaxShownValues + 1)
	raw, _ := json.Marshal(args)
	err := CheckShown(json.RawMessage(`[]`), raw, "list_transfers", "bot")
	if !errors.Is(err, authzdetails.ErrTooLargeToShow) || !strings.Contains(err.Error(), fmt.Sprintf("%d values", authzdetails.MaxShownValues+1)) {
		t.Fatalf("CheckShown: %v", err)
	}
}

// Refusing a call costs about what its arguments weigh, not what their
// display would: a long key above many values would repeat in every
// path label (here 16,000 × 30 KB, half a gigabyte) if the labels were
// built past the limit.
func TestShowLimitRefusalIsCheap(t *testing.T) {
	many := make([]any, 16000)
	for i := range many {
		many[i] = 0
	}
	args := map[string]any{strings.Repeat("k", 30000): many}
	nr := mcpRequest(args)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	CheckShown(nr.AuthorizationDetails, nr.Args.JSON(), nr.Tool, nr.Agent)
	runtime.ReadMemStats(&after)
	if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 64<<20 {
		t.Fatalf("refusing %d bytes of arguments allocated %d bytes", len(nr.Args.JSON()), allocs)
	}
	err := CheckShown(nr.AuthorizationDetails, nr.Args.JSON(), nr.Tool, nr.Agent)
	var le *authzdetails.ShowLimitError
	if !errors.As(err, &le) || le.Values != 16000 || le.Bytes < 16000*30000 {
		t.Fatalf("CheckShown: %v (%+v)", err, le)
	}
}
