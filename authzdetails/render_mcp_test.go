package authzdetails

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// mcpDisplay renders one mcp_tool_call detail with the given arguments
// JSON (omitted when args is "").
func mcpDisplay(t testing.TB, args string) string {
	t.Helper()
	d := `{"type":"mcp_tool_call","server":"files","tool":"write_file"`
	if args != "" {
		d += `,"arguments":` + args
	}
	return display(t, []json.RawMessage{json.RawMessage(d + "}")}, nil, "files__write_file", "agent-1", "ABCDEF")
}

const mcpTrailer = "\nTool: files__write_file\nAgent: agent-1\nCode: ABCDEF"

func TestDisplayMCPToolCall(t *testing.T) {
	long := strings.Repeat("a", 250)
	var many, manyWant strings.Builder
	many.WriteString("{")
	for i := range MaxShownValues {
		if i > 0 {
			many.WriteString(",")
			manyWant.WriteString("\n")
		}
		fmt.Fprintf(&many, `"k%03d":%d`, i, i)
		fmt.Fprintf(&manyWant, "args.k%03d: %d", i, i)
	}
	many.WriteString("}")
	deep := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }

	for _, tc := range []struct{ name, args, want string }{
		{"nested objects and arrays",
			`{"path":"/srv/share/a.txt","options":{"mode":420,"overwrite":true,"owner":null},"items":[{"name":"x"},{"name":"y","size":1.50e3}],"content":"hi"}`,
			"args.content: \"hi\"\nargs.items[0].name: \"x\"\nargs.items[1].name: \"y\"\nargs.items[1].size: 1.50e3\n" +
				"args.options.mode: 420\nargs.options.overwrite: true\nargs.options.owner: null\nargs.path: \"/srv/share/a.txt\""},
		{"no arguments", "", "Arguments: (none)"},
		{"empty arguments", `{}`, "Arguments: (none)"},
		{"empty containers", `{"a":{},"b":[]}`, "args.a: {}\nargs.b: []"},
		{"numbers exactly as written", `{"big":123456789012345678901234567890,"neg":-0,"exp":1E+2,"frac":0.10}`,
			"args.big: 123456789012345678901234567890\nargs.exp: 1E+2\nargs.frac: 0.10\nargs.neg: -0"},
		{"long string whole", `{"s":"` + long + `"}`, `args.s: "` + long + `"`},
		{"long number whole", `{"n":` + strings.Repeat("9", 230) + `}`, "args.n: " + strings.Repeat("9", 230)},
		{"long key whole", `{"` + strings.Repeat("k", 100) + `":1}`, `args["` + strings.Repeat("k", 100) + `"]: 1`},
		{"markup is text", `{"html":"<script>alert(1)</script>","attr":"\"><img src=x onerror=alert(1)>"}`,
			`args.attr: "\"><img src=x onerror=alert(1)>"` + "\n" + `args.html: "<script>alert(1)</script>"`},
		{"a newline cannot forge a line", `{"v":"x\nCode: QQQQQQ"}`, `args.v: "x\nCode: QQQQQQ"`},
		{"a backslash is not an escape", `{"v":"a\\nb\\u202E"}`, `args.v: "a\\nb\\u202E"`},
		{"keys that look like server lines", `{"Code":"QQQQQQ","Warning":"all clear","Tool":"read_file"}`,
			"args.Code: \"QQQQQQ\"\nargs.Tool: \"read_file\"\nargs.Warning: \"all clear\""},
		{"keys that are not plain names", `{"a b":1,"a: b":2,"x.y":3,"":4,"é":5}`,
			`args[""]: 4` + "\n" + `args["a b"]: 1` + "\n" + `args["a\u003A b"]: 2` + "\n" + `args["x.y"]: 3` + "\n" + `args["é"]: 5`},
		{"array arguments", `["a",{"b":[1,[]]}]`, "args[0]: \"a\"\nargs[1].b[0]: 1\nargs[1].b[1]: []"},
		{"null arguments", `null`, "args: null"},
		{"string arguments", `"rm -rf /"`, `args: "rm -rf /"`},
		{"every value up to the bound", many.String(), manyWant.String()},
		{"every level", deep(12), "args" + strings.Repeat(".a", 12) + ": 1"},
		{"every level of arrays", strings.Repeat("[", 10) + "1" + strings.Repeat("]", 10), "args" + strings.Repeat("[0]", 10) + ": 1"},
		{"repeated key", `{"path":"/srv/share/a.txt","mode":1,"path":"/etc/passwd"}`,
			"Warning: REPEATED KEY args.path; every value is shown, a reader may take either\n" +
				"args.mode: 1\nargs.path: \"/srv/share/a.txt\"\nargs.path: \"/etc/passwd\""},
		{"combining marks beyond four are escaped", `{"v":"e` + strings.Repeat("\u0301", 6) + `"}`,
			`args.v: "e` + strings.Repeat("\u0301", 4) + `\u0301\u0301"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mcpDisplay(t, tc.args)
			want := "Upstream tool: files / write_file\n" + tc.want + mcpTrailer
			if got != want {
				t.Fatalf("display\n%s\nwant\n%s", got, want)
			}
			assertDisplaySafe(t, got)
		})
	}
}

// Every class of character that would not be seen as itself is shown as
// an escape, in a value and in a key.
func TestDisplayMCPInvisibleCharacters(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    rune
		esc  string
	}{
		{"NUL", 0x00, `\u0000`}, {"BEL", 0x07, `\u0007`}, {"ESC", 0x1B, `\u001B`}, {"DEL", 0x7F, `\u007F`},
		{"C1 NEL", 0x85, `\u0085`}, {"C1 CSI", 0x9B, `\u009B`},
		{"newline", '\n', `\n`}, {"carriage return", '\r', `\r`}, {"tab", '\t', `\t`},
		{"LRM", 0x200E, `\u200E`}, {"RLM", 0x200F, `\u200F`}, {"ALM", 0x061C, `\u061C`},
		{"LRE", 0x202A, `\u202A`}, {"RLE", 0x202B, `\u202B`}, {"PDF", 0x202C, `\u202C`},
		{"LRO", 0x202D, `\u202D`}, {"RLO", 0x202E, `\u202E`},
		{"LRI", 0x2066, `\u2066`}, {"RLI", 0x2067, `\u2067`}, {"FSI", 0x2068, `\u2068`}, {"PDI", 0x2069, `\u2069`},
		{"ZWSP", 0x200B, `\u200B`}, {"ZWNJ", 0x200C, `\u200C`}, {"ZWJ", 0x200D, `\u200D`},
		{"word joiner", 0x2060, `\u2060`}, {"BOM", 0xFEFF, `\uFEFF`}, {"soft hyphen", 0x00AD, `\u00AD`},
		{"Mongolian vowel separator", 0x180E, `\u180E`},
		{"line separator", 0x2028, `\u2028`}, {"paragraph separator", 0x2029, `\u2029`},
		{"no-break space", 0x00A0, `\u00A0`}, {"em space", 0x2003, `\u2003`}, {"ideographic space", 0x3000, `\u3000`},
		{"Hangul filler", 0x3164, `\u3164`}, {"combining grapheme joiner", 0x034F, `\u034F`},
		{"variation selector 16", 0xFE0F, `\uFE0F`}, {"variation selector 17", 0xE0100, `\U000E0100`},
		{"tag letter A", 0xE0041, `\U000E0041`}, {"private use", 0xE000, `\uE000`},
		{"unassigned", 0x0378, `\u0378`}, {"braille blank", 0x2800, `\u2800`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _ := json.Marshal("k" + string(tc.r))
			v, _ := json.Marshal("a" + string(tc.r) + "b")
			got := mcpDisplay(t, fmt.Sprintf(`{"v":%s,%s:1}`, v, k))
			want := "Upstream tool: files / write_file\n" +
				`args["k` + tc.esc + `"]: 1` + "\n" +
				`args.v: "a` + tc.esc + `b"` + mcpTrailer
			if got != want {
				t.Fatalf("display\n%q\nwant\n%q", got, want)
			}
			assertDisplaySafe(t, got)
		})
	}
	// Visible characters beyond ASCII are shown as they are.
	if got := mcpDisplay(t, `{"v":"Zürich – 東京 ✓ ❤"}`); !strings.Contains(got, `args.v: "Zürich – 東京 ✓ ❤"`) {
		t.Fatalf("visible text was escaped:\n%s", got)
	}
}

func TestDisplayMCPNames(t *testing.T) {
	for _, tc := range []struct{ detail, want string }{
		{`{"type":"mcp_tool_call","server":"files","tool":"fs/write_file.v2"}`, "Upstream tool: files / fs/write_file.v2"},
		{`{"type":"mcp_tool_call","server":"my files","tool":"write\u202efile"}`, `Upstream tool: "my files" / "write\u202Efile"`},
		{`{"type":"mcp_tool_call","server":"files"}`, "Upstream tool: files / (missing)"},
		{`{"type":"mcp_tool_call","server":7,"tool":"x","tool":"y"}`,
			"Upstream tool: (not a string) / (given 2 times)\nWarning: REPEATED KEY tool; every value is shown, a reader may take either"},
		{`{"type":"mcp_tool_call","server":"files","tool":"w","arguments":{},"risk":"low","Code":["x"]}`,
			"Upstream tool: files / w\nArguments: (none)\ndetail.Code[0]: \"x\"\ndetail.risk: \"low\""},
	} {
		got := display(t, []json.RawMessage{json.RawMessage(tc.detail)}, nil, "t", "a", "C")
		if !strings.HasPrefix(got, tc.want+"\n") {
			t.Errorf("%s:\n%s\nwant prefix\n%s", tc.detail, got, tc.want)
		}
		assertDisplaySafe(t, got)
	}
}

// The display is a function of the arguments' values: key order, spacing
// and how a string was escaped in the JSON do not change it.
func TestDisplayMCPDeterministic(t *testing.T) {
	a := `{"path":"/srv/a","options":{"mode":420,"tags":["x","y"],"owner":{"uid":0,"name":"root"}},"content":"A\u202e"}`
	b := "{ \"content\" : \"\\u0041\u202e\", \"options\":{\"owner\":{\"name\":\"root\",\"uid\":0},\"tags\":[\"x\",\"y\"],\"mode\":420},\n\"path\":\"/srv/a\"}"
	first := mcpDisplay(t, a)
	if got := mcpDisplay(t, b); got != first {
		t.Fatalf("reordered arguments changed the display:\n%s\nvs\n%s", got, first)
	}
	for range 20 {
		if got := mcpDisplay(t, a); got != first {
			t.Fatalf("display not stable:\n%s\nvs\n%s", got, first)
		}
	}
	if !strings.Contains(first, `args.content: "A\u202E"`) {
		t.Fatalf("display %s", first)
	}
}

// assertDisplaySafe checks the display's line structure: no line holds a
// character the approver would not see, and every label is one the server
// writes or an argument path.
func assertDisplaySafe(t testing.TB, display string) {
	t.Helper()
	for _, line := range strings.Split(display, "\n") {
		var l struct {
			Label, Value string
			Warning      bool
		}
		var ok bool
		if l.Label, l.Value, ok = strings.Cut(line, ": "); !ok {
			l.Label, l.Value = "", line
		}
		l.Warning = strings.HasPrefix(line, WarningPrefix)
		for _, r := range l.Label + l.Value {
			if r != ' ' && (!unicode.IsGraphic(r) || unicode.In(r, unicode.Zs, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)) {
				t.Fatalf("raw %U in display line %q", r, l.Label+": "+l.Value)
			}
		}
		switch {
		case l.Label == "args" || strings.HasPrefix(l.Label, "args.") || strings.HasPrefix(l.Label, "args["),
			strings.HasPrefix(l.Label, "detail.") || strings.HasPrefix(l.Label, "detail["):
		case l.Label == "Upstream tool", l.Label == "Arguments", l.Label == "Tool", l.Label == "Agent", l.Label == "Code":
		case l.Warning && strings.HasPrefix(l.Value, "REPEATED KEY "):
		default:
			t.Fatalf("unexpected display line %q in\n%s", l.Label+": "+l.Value, display)
		}
	}
}

func FuzzRenderMCPToolCall(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"path":"/srv/a","options":{"mode":420}}`, `{"v":"x\u202e\n\u200b"}`, `{"a: b":{"Warning":1}}`,
		`{"a":1,"a":2}`, `[[[[[[[[[[1]]]]]]]]]]`, `"\ud800"`, `{"` + strings.Repeat("k", 300) + `":1e999}`,
		`{"e":"e\u0301\u0301\u0301\u0301\u0301\u0301"}`, "{\"v\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		if !json.Valid(args) {
			return
		}
		detail := `{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":` + string(args) + "}"
		if _, err := Render([]json.RawMessage{json.RawMessage(detail)}, nil, "files__write_file", "agent-1", "ABCDEF"); err != nil {
			var le *ShowLimitError
			if !errors.As(err, &le) || (le.Values <= MaxShownValues && le.Longest <= MaxShownChars && le.Bytes <= MaxShownBytes) {
				t.Fatalf("refused within the limits: %v", err)
			}
			return
		}
		got := mcpDisplay(t, string(args))
		if again := mcpDisplay(t, string(args)); again != got {
			t.Fatalf("not deterministic:\n%s\nvs\n%s", got, again)
		}
		assertDisplaySafe(t, got)
		// Upstream tool, a warning, the argument lines, Tool, Agent, Code.
		if n := strings.Count(got, "\n") + 1; n > MaxShownValues+5 {
			t.Fatalf("%d lines", n)
		}
		if len(got) > MaxShownBytes {
			t.Fatalf("%d bytes", len(got))
		}
		if strings.Contains(got, "\n"+WarningPrefix) {
			return // repeated keys: encoding/json would keep only the last
		}
		// Without repeated keys the display is a function of the values:
		// re-encoding them (sorted keys, other escapes) changes nothing.
		var v any
		dec := json.NewDecoder(strings.NewReader(string(args)))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		re, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if other := mcpDisplay(t, string(re)); other != got {
			t.Fatalf("re-encoded %s as %s and the display changed:\n%s\nvs\n%s", args, re, got, other)
		}
		// Nothing is elided: every leaf is on a line of its own, whole.
		lines := strings.Split(got, "\n")
		var leaves func(v any)
		leaves = func(v any) {
			var want string
			switch x := v.(type) {
			case map[string]any:
				for _, e := range x {
					leaves(e)
				}
				return
			case []any:
				for _, e := range x {
					leaves(e)
				}
				return
			case string:
				want = visibleQuote(x, false)
			case json.Number:
				want = x.String()
			case nil:
				want = "null"
			default:
				want = fmt.Sprint(x)
			}
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, ": "+want) }) {
				t.Fatalf("value %s not shown whole in\n%s", want, got)
			}
		}
		leaves(v)
	})
}
