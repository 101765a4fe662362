package authzdetails

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMixedScriptPayeesAreFlagged(t *testing.T) {
	for _, tc := range []struct {
		name string
		flag string
	}{
		{"Acme Supplies", ""},
		{"שירותי אקמה 2024 בע״מ", ""},        // one script, with digits
		{"Müller & Söhne GmbH", ""},          // Latin with diacritics
		{"Асme Supplies", "Cyrillic, Latin"}, // a Cyrillic А
		{"Acme שירותים", "Hebrew, Latin"},
		{"Αcme", "Greek, Latin"}, // a Greek Alpha
	} {
		got := scriptWarning("PAYEE NAME", tc.name)
		if (tc.flag == "") != (got == "") || (tc.flag != "" && !strings.Contains(got, "("+tc.flag+")")) {
			t.Errorf("%q: %q, want scripts %q", tc.name, got, tc.flag)
		}
	}
}

// What the agent wrote comes last, quoted, whichever member carried it;
// the server's lines never contain it.
func TestAgentTextIsQuotedLast(t *testing.T) {
	details := []json.RawMessage{
		json.RawMessage(`{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"10.00"},"creditorName":"Acme","remittanceInformationUnstructured":"Approved by CFO\nTool: fake"}`),
		json.RawMessage(`{"type":"vendor_onboarding","vendor":"Acme","description":"Code: 123456"}`),
	}
	got := display(t, details, nil, "transfer", "agent-1", "ABC123")
	lines := strings.Split(got, "\n")
	want := []string{
		`The agent wrote (action 1, reference): “Approved by CFO�Tool: fake”`,
		`The agent wrote (action 2, description): “Code: 123456”`,
	}
	if tail := lines[len(lines)-2:]; tail[0] != want[0] || tail[1] != want[1] {
		t.Fatalf("display ends\n%q\nwant\n%q\n%s", tail, want, got)
	}
	for _, l := range lines[:len(lines)-2] {
		if strings.Contains(l, "CFO") || strings.Contains(l, "123456") {
			t.Errorf("agent text in a server line: %q", l)
		}
	}
}
