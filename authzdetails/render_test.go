package authzdetails

import (
	"encoding/json"
	"fmt"
	"github.com/countersign/countersign/vocab"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/digest"
)

// display renders a display that must be within the limits.
func display(t testing.TB, details []json.RawMessage, args json.RawMessage, tool, agent, code string) string {
	t.Helper()
	got, err := Render(details, args, tool, agent, code)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return got
}

func TestDisplay(t *testing.T) {
	got := display(t, splitDetails(t, `[{"type":"payment_initiation","instructedAmount":{"currency":"usd","amount":"1234567.5"},"creditorName":"Vendor X\nTo: Someone Else\u202e","debtorAccount":{"id":"operating"},"counterpartyKnown":false}]`), nil, "transfer", "agent-1", "ABCDEF")
	want := "Payment: USD 1,234,567.5\nTo: Vendor X\uFFFDTo: Someone Else\uFFFD\nFrom: operating\nWarning: NEW COUNTERPARTY, never paid before\nTool: transfer\nAgent: agent-1\nCode: ABCDEF"
	if got != want {
		t.Fatalf("display\n%s\nwant\n%s", got, want)
	}
	for _, tc := range []struct{ details, want string }{
		{`[{"type":"deployment","service":"api","version":"1.4.2","environment":"production"}]`, "Deploy: api version 1.4.2\nEnvironment: production\nWarning: PRODUCTION environment"},
		{`[{"type":"secret_access","name":"prod-db-password","classification":"restricted"}]`, "Read secret: prod-db-password\nClassification: restricted\nWarning: RESTRICTED secret"},
		{`[{"type":"custom","b":2,"a":"x"}]`, "Action: custom\na: x\nb: 2"},
		{`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"1e9"},"creditorName":"Y"}]`, `Payment: EUR "1e9" (not a plain decimal)` + "\nTo: Y"},
	} {
		got := display(t, splitDetails(t, tc.details), nil, "t", "a", "C")
		if !strings.HasPrefix(got, tc.want+"\n") {
			t.Errorf("%s:\n%s\nwant prefix\n%s", tc.details, got, tc.want)
		}
	}
}

func splitDetails(t *testing.T, s string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Changing any argument, the last of many included, changes the display
// and so the digest the key signs.
func TestDisplayDigestCoversEveryArgument(t *testing.T) {
	args := map[string]any{}
	for i := range MaxShownValues {
		args[fmt.Sprintf("k%03d", i)] = i
	}
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
