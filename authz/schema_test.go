package authz

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// transferSchema has the shape of the built-in transfer tool's.
var transferSchema = Schema{
	Args: json.RawMessage(`{"type":"object","additionalProperties":false,"required":["from","to","amount","currency"],
		"properties":{"from":{"type":"string","enum":["operating"]},"to":{"type":"string"},"amount":{"type":"number","exclusiveMinimum":0},
		"currency":{"type":"string","enum":["USD"]},"memo":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}},
		"meta":{"type":"object"}}}`),
	Facts: map[string]json.RawMessage{"counterparty": json.RawMessage(`{"type":"object","additionalProperties":false,
		"properties":{"name":{"type":"string"},"known":{"type":"boolean"},"exists":{"type":"boolean"},"first_seen":{"type":"string"}}}`)},
}

func compileTransfer(when string) error {
	_, err := Compile(map[string]config.Tool{"transfer": {
		Level: "low", Approvers: []string{"alice"},
		Rules: []config.Rule{{When: when, Level: "high"}},
	}}, []config.Approver{{ID: "alice", Name: "Alice"}}, Options{
		Facts:   map[string][]string{"transfer": {"counterparty"}},
		Schemas: map[string]Schema{"transfer": transferSchema},
	})
	return err
}

// A rule that names a field the tool does not have, or compares one with a
// value of another type, would fail closed on every call: Compile refuses
// it and says what the tool has.
func TestRulesAreCheckedAgainstTheToolsSchema(t *testing.T) {
	for _, tc := range []struct {
		when string
		want string // "" = compiles
	}{
		{"args.amount > 10000 || !counterparty.known", ""},
		{"args.amount == 5", ""}, // numbers compare across int and double
		{"args.amount > 10.5 && args.amount != 20", ""},
		{"has(args.memo) && args.memo.contains('urgent')", ""},
		{"'vip' in args.tags", ""},
		{"args.meta.anything == 1", ""}, // an open object's fields are not known
		{"args.currency == 'USD' && counterparty.first_seen < '2026'", ""},
		{"args.amout > 10000", `tools.transfer.rules[0].when: column 5 (at ".amout > 10000"): there is no field "amout" (transfer has args: amount, currency, from, memo, meta, tags, to; counterparty: exists, first_seen, known, name)`},
		{"counterparty.knwon == true", `there is no field "knwon"`},
		{"args.currency == 5", `tools.transfer.rules[0].when: column 15 (at "== 5"): == cannot combine a string with an int`},
		{"counterparty.known == 'yes'", "== cannot combine a bool with a string"},
		{"args.tags == 'vip'", "== cannot combine a list(string) with a string"},
		{"args.to > 3", "> cannot combine a string with an int"},
	} {
		err := compileTransfer(tc.when)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.when, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s:\n got  %v\n want %s", tc.when, err, tc.want)
		}
	}
}

// The schema only checks: rules still run untyped, so a missing optional
// argument still fails closed and a present one still decides.
func TestTypedRulesDecideAsBefore(t *testing.T) {
	p, err := Compile(map[string]config.Tool{"transfer": {
		Level: "low", Approvers: []string{"alice"},
		Rules: []config.Rule{{Name: "memo", When: "args.memo == 'x'", Level: "high"}},
	}}, []config.Approver{{ID: "alice", Name: "Alice"}}, Options{
		Facts:   map[string][]string{"transfer": {"counterparty"}},
		Schemas: map[string]Schema{"transfer": transferSchema},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if d := p.Decide(Input{Tool: "transfer", Args: map[string]any{"memo": "x", "amount": 1.0}, Facts: map[string]any{"counterparty": map[string]any{}}, Now: now}); d.Level != vocab.LevelHigh {
		t.Errorf("memo x: %+v", d)
	}
	if d := p.Decide(Input{Tool: "transfer", Args: map[string]any{"amount": 1.0}, Facts: map[string]any{"counterparty": map[string]any{}}, Now: now}); d.Level != vocab.LevelDeny {
		t.Errorf("no memo should fail closed: %+v", d)
	}
}
