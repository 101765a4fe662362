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
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// mcpRequest is a request for an upstream call with these arguments.
func mcpRequest(args map[string]any) NewRequest {
	nr := paymentRequest("alice")
	nr.Tool = "files__write_file"
	raw, _ := json.Marshal(args)
	nr.Args = raw
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
	entry, ok := f.rec.Last(audit.KindApprovalRequested)
	if !ok {
		t.Fatal("no approval.requested entry")
	}
	lines = append(lines, `args.content: "`+strings.Repeat("0123456789", 150)+`\u202Eend"`)
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
		assertDisplaySafe(t, display)
	}
}

// A call over a limit is refused with the limit and the figure named, and
// Create raises nothing: no row, no entry, nothing to show.
func TestShowLimitsRefuseBeforeARequest(t *testing.T) {
	tooMany, _ := manyValues(MaxShownValues + 1)
	atMost, _ := manyValues(MaxShownValues)
	bulky := map[string]any{}
	for i := range 9 {
		bulky[fmt.Sprintf("part%d", i)] = strings.Repeat("x", MaxShownChars)
	}
	escaped := map[string]any{"v": strings.Repeat("\U000E0041", MaxShownChars)} // 10 bytes shown per character
	for _, tc := range []struct {
		name string
		args map[string]any
		want string // "" when it is within the limits
	}{
		{"values at the bound", atMost, ""},
		{"one value too many", tooMany, fmt.Sprintf("%d values, at most %d", MaxShownValues+1, MaxShownValues)},
		{"a string at the bound", map[string]any{"s": strings.Repeat("é", MaxShownChars)}, ""},
		{"a string too long", map[string]any{"s": strings.Repeat("é", MaxShownChars+1)},
			fmt.Sprintf("a value of %d characters (args.s), at most %d", MaxShownChars+1, MaxShownChars)},
		{"a key too long", map[string]any{strings.Repeat("k", MaxShownChars+5): 1},
			fmt.Sprintf("a value of %d characters (a key), at most %d", MaxShownChars+5, MaxShownChars)},
		{"too much text in all", bulky, fmt.Sprintf("bytes of text, at most %d", MaxShownBytes)},
		{"escapes count as shown", escaped, fmt.Sprintf("bytes of text, at most %d", MaxShownBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			nr := mcpRequest(tc.args)
			err := CheckShown(nr.AuthorizationDetails, nr.Args, nr.Tool, nr.Agent)
			req, cerr := f.svc.Create(context.Background(), nr)
			if tc.want == "" {
				if err != nil || cerr != nil {
					t.Fatalf("within the limits, refused: %v / %v", err, cerr)
				}
				if len(req.Display) > MaxShownBytes {
					t.Fatalf("display of %d bytes", len(req.Display))
				}
				return
			}
			var le *ShowLimitError
			if !errors.As(err, &le) || !strings.HasPrefix(err.Error(), "arguments too large to show the approver in full: ") ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckShown: %v, want %q", err, tc.want)
			}
			if !errors.Is(cerr, ErrTooLargeToShow) || !errors.Is(cerr, ErrInvalidRequest) || !strings.Contains(cerr.Error(), tc.want) {
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
	args, _ := manyValues(MaxShownValues)
	nr := mcpRequest(args)
	nr.AuthorizationDetails, _ = json.Marshal([]map[string]any{{
		"type": "mcp_tool_call", "server": "files", "tool": "write_file", "arguments": args,
		"definition_sha256": strings.Repeat("ab", 32),
	}})
	if err := CheckShown(nr.AuthorizationDetails, nr.Args, nr.Tool, nr.Agent); err != nil {
		t.Fatalf("%d argument values and a server member: %v", MaxShownValues, err)
	}
	got := display(t, splitDetails(t, string(nr.AuthorizationDetails)), nil, "t", "a", "C")
	if !strings.Contains(got, "\ndetail.definition_sha256: \""+strings.Repeat("ab", 32)+"\"\n") {
		t.Fatalf("display\n%s", got)
	}
}

// A tool without details is bound by the same limits on its arguments.
func TestShowLimitsBindArgumentsWithoutDetails(t *testing.T) {
	args, _ := manyValues(MaxShownValues + 1)
	err := CheckShown(json.RawMessage(`[]`), mustJSON(t, args), "list_transfers", "bot")
	if !errors.Is(err, ErrTooLargeToShow) || !strings.Contains(err.Error(), fmt.Sprintf("%d values", MaxShownValues+1)) {
		t.Fatalf("CheckShown: %v", err)
	}
}

// Changing any argument, the last of many included, changes the display
// and so the digest the key signs.
func TestDisplayDigestCoversEveryArgument(t *testing.T) {
	args, _ := manyValues(MaxShownValues)
	base := display(t, nil, mustJSON(t, args), "t", "a", "C")
	for _, key := range []string{"k000", "k050", fmt.Sprintf("k%03d", MaxShownValues-1)} {
		changed := map[string]any{}
		for k, v := range args {
			changed[k] = v
		}
		changed[key] = "x"
		other := display(t, nil, mustJSON(t, changed), "t", "a", "C")
		if other == base || !strings.Contains(other, "args."+key+`: "x"`) {
			t.Fatalf("changing %s: display\n%s", key, other)
		}
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		sum := func(display string) [32]byte {
			d, err := digest.Compute(digest.Action{
				RequestID: "r", Decision: vocab.Approve, AuthorizationDetails: []byte(`[]`), Tool: "t",
				Display: display, Nonce: make([]byte, 32), ExpiresAt: at,
			})
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		if sum(base) == sum(other) {
			t.Fatalf("changing %s left the digest unchanged", key)
		}
	}
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// The built-in tools' renderers show every argument whole: no name, memo
// or key is cut or trimmed, and a tool without details has its arguments
// listed.
func TestDisplayBuiltinsWhole(t *testing.T) {
	name := strings.Repeat("s", 128) // the longest name read_secret takes
	memo := "  " + strings.Repeat("m", 136) + "  "
	for _, tc := range []struct {
		name, details, args string
		want                []string
	}{
		{"secret name", `[{"type":"secret_access","name":"` + name + `","classification":"restricted"}]`, "",
			[]string{"Read secret: " + name}},
		{"memo untrimmed", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"1.00"},"creditorName":"Acme","remittanceInformationUnstructured":"` + memo + `"}]`, "",
			[]string{"The agent wrote (reference): “" + memo + "”"}},
		{"idempotency key", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"1.00"},"creditorName":"Acme","idempotencyKey":"inv-42:retry.1"}]`, "",
			[]string{"Idempotency key: inv-42:retry.1 (a repeat with this key pays once)"}},
		{"deployment", `[{"type":"deployment","service":"` + strings.Repeat("a", 100) + `","version":"v` + strings.Repeat("1", 63) + `","environment":"` + strings.Repeat("e", 70) + `"}]`, "",
			[]string{"Deploy: " + strings.Repeat("a", 100) + " version v" + strings.Repeat("1", 63), "Environment: " + strings.Repeat("e", 70)}},
		{"generic fields", `[{"type":"custom","` + strings.Repeat("k", 50) + `":"` + strings.Repeat("v", 300) + `"}]`, "",
			[]string{strings.Repeat("k", 50) + ": " + strings.Repeat("v", 300)}},
		{"no details", `[]`, `{"account":"ops","limit":20}`,
			[]string{"Action: get_balance (no details given)", `args.account: "ops"`, "args.limit: 20"}},
		// The longest arguments transfer takes (payee 100, memo 140, key
		// 128 characters, account ids 64) are within the limits, whole.
		{"largest transfer", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"99999999999.99"},` +
			`"creditorName":"` + strings.Repeat("P", 100) + `","debtorAccount":{"id":"` + strings.Repeat("a", 64) + `"},` +
			`"remittanceInformationUnstructured":"` + strings.Repeat("M", 140) + `","idempotencyKey":"` + strings.Repeat("K", 128) + `"}]`, "",
			[]string{"To: " + strings.Repeat("P", 100), "From: " + strings.Repeat("a", 64), "Payment: USD 99,999,999,999.99",
				"Idempotency key: " + strings.Repeat("K", 128) + " (a repeat with this key pays once)",
				"The agent wrote (reference): “" + strings.Repeat("M", 140) + "”"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := display(t, splitDetails(t, tc.details), json.RawMessage(tc.args), "get_balance", "a", "C")
			lines := strings.Split(got, "\n")
			for _, want := range tc.want {
				if !slices.Contains(lines, want) {
					t.Fatalf("display lacks %q:\n%s", want, got)
				}
			}
		})
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
	CheckShown(nr.AuthorizationDetails, nr.Args, nr.Tool, nr.Agent)
	runtime.ReadMemStats(&after)
	if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 64<<20 {
		t.Fatalf("refusing %d bytes of arguments allocated %d bytes", len(nr.Args), allocs)
	}
	err := CheckShown(nr.AuthorizationDetails, nr.Args, nr.Tool, nr.Agent)
	var le *ShowLimitError
	if !errors.As(err, &le) || le.Values != 16000 || le.Bytes < 16000*30000 {
		t.Fatalf("CheckShown: %v (%+v)", err, le)
	}
}
