package argschema

import (
	"strings"
	"testing"
)

// Every JSON Schema keyword the built-in tools use, and the ones upstream
// MCP servers commonly use, fails with a sentence a person can act on: no
// Go values (&{-5/1 0/1}), no keyword jargon.
func TestSchemaErrorsAreSentences(t *testing.T) {
	for _, tc := range []struct {
		keyword string
		schema  string // the arguments object's schema
		args    map[string]any
		want    string
	}{
		{"type", `{"properties":{"amount":{"type":"number"}}}`,
			map[string]any{"amount": "5"}, "amount: must be a number, not a string"},
		{"type integer", `{"properties":{"limit":{"type":"integer"}}}`,
			map[string]any{"limit": 2.5}, "limit: must be a whole number, not a number"},
		{"type of the arguments", `{"type":"object"}`,
			nil, ""}, // an object always passes; the guard refuses non-objects before the schema
		{"enum", `{"properties":{"environment":{"type":"string","enum":["staging","production"]}}}`,
			map[string]any{"environment": "prod"}, `environment: must be one of "staging", "production"`},
		{"enum of one", `{"properties":{"from":{"enum":["operating"]}}}`,
			map[string]any{"from": "payroll"}, `from: must be "operating"`},
		{"const", `{"properties":{"mode":{"const":"dry-run"}}}`,
			map[string]any{"mode": "live"}, `mode: must be "dry-run"`},
		{"required", `{"required":["from","to"]}`,
			map[string]any{}, `missing required argument "from"; missing required argument "to"`},
		{"additionalProperties", `{"properties":{"a":{}},"additionalProperties":false}`,
			map[string]any{"a": 1.0, "evil": true}, `unknown argument "evil"`},
		{"minLength 1", `{"properties":{"to":{"type":"string","minLength":1}}}`,
			map[string]any{"to": ""}, "to: must not be empty"},
		{"minLength", `{"properties":{"code":{"type":"string","minLength":6}}}`,
			map[string]any{"code": "abc"}, "code: at least 6 characters"},
		{"maxLength", `{"properties":{"memo":{"type":"string","maxLength":140}}}`,
			map[string]any{"memo": strings.Repeat("x", 141)}, "memo: at most 140 characters"},
		{"pattern", `{"properties":{"version":{"type":"string","pattern":"^[0-9.]+$"}}}`,
			map[string]any{"version": "-rf"}, "version: must match the pattern ^[0-9.]+$"},
		{"minimum", `{"properties":{"limit":{"type":"integer","minimum":1}}}`,
			map[string]any{"limit": 0.0}, "limit: must be at least 1"},
		{"maximum", `{"properties":{"limit":{"type":"integer","maximum":100}}}`,
			map[string]any{"limit": 101.0}, "limit: must be at most 100"},
		{"exclusiveMinimum", `{"properties":{"amount":{"type":"number","exclusiveMinimum":0}}}`,
			map[string]any{"amount": -5.0}, "amount: must be greater than 0"},
		{"exclusiveMaximum", `{"properties":{"ratio":{"type":"number","exclusiveMaximum":1}}}`,
			map[string]any{"ratio": 1.0}, "ratio: must be less than 1"},
		{"fractional bound", `{"properties":{"ratio":{"type":"number","minimum":0.25}}}`,
			map[string]any{"ratio": 0.1}, "ratio: must be at least 0.25"},
		{"multipleOf", `{"properties":{"cents":{"type":"number","multipleOf":5}}}`,
			map[string]any{"cents": 7.0}, "cents: must be a multiple of 5"},
		{"not (no accounts configured)", `{"properties":{"account":{"not":{}}}}`,
			map[string]any{"account": "operating"}, "account: is not allowed"},
		{"minItems", `{"properties":{"tags":{"type":"array","minItems":2}}}`,
			map[string]any{"tags": []any{"a"}}, "tags: needs at least 2 items"},
		{"maxItems", `{"properties":{"tags":{"type":"array","maxItems":1}}}`,
			map[string]any{"tags": []any{"a", "b"}}, "tags: takes at most 1 item"},
		{"uniqueItems", `{"properties":{"tags":{"type":"array","uniqueItems":true}}}`,
			map[string]any{"tags": []any{"a", "a"}}, "tags: items 0 and 1 are the same; each must be different"},
		{"items, nested path", `{"properties":{"tags":{"type":"array","items":{"type":"string"}}}}`,
			map[string]any{"tags": []any{"a", 3.0}}, "tags[1]: must be a string, not a number"},
		{"nested object", `{"properties":{"payee":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}}}`,
			map[string]any{"payee": map[string]any{"nick": "x"}}, `payee: missing required field "name"; payee: unknown field "nick"`},
		{"dependentRequired", `{"dependentRequired":{"currency":["amount"]}}`,
			map[string]any{"currency": "USD"}, `missing required argument "amount" (needed with "currency")`},
		{"minProperties", `{"minProperties":1}`,
			map[string]any{}, "needs at least 1 argument"},
		{"anyOf", `{"properties":{"id":{"anyOf":[{"type":"string"},{"type":"integer"}]}}}`,
			map[string]any{"id": true}, "id: does not match any of the allowed forms"},
		{"oneOf", `{"properties":{"n":{"oneOf":[{"type":"number"},{"type":"integer"}]}}}`,
			map[string]any{"n": 1.0}, "n: matches more than one of the allowed forms"},
		{"false schema", `{"properties":{"legacy":false}}`,
			map[string]any{"legacy": 1.0}, "legacy: is not allowed"},
		{"several at once", `{"properties":{"amount":{"type":"number","exclusiveMinimum":0},"memo":{"type":"string","maxLength":3}},"required":["from"],"additionalProperties":false}`,
			map[string]any{"amount": -1.0, "memo": "long", "evil": 1.0},
			`amount: must be greater than 0; memo: at most 3 characters; missing required argument "from"; unknown argument "evil"`},
	} {
		t.Run(tc.keyword, func(t *testing.T) {
			s, err := Compile("t", []byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Validate(tc.args)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if got := strings.TrimPrefix(err.Error(), "invalid arguments: "); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if strings.Contains(err.Error(), "&{") {
				t.Errorf("Go internals in %q", err)
			}
		})
	}
}

// An agent-chosen argument name is quoted and bounded, so it cannot forge a
// sentence or flood the audit reason.
func TestSchemaErrorBoundsUnknownNames(t *testing.T) {
	s, err := Compile("t", []byte(`{"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 500) + "\"; approved"
	err = s.Validate(map[string]any{long: 1.0})
	if err == nil || len(err.Error()) > 120 || strings.Contains(err.Error(), `"; approved`) {
		t.Fatalf("unbounded or unquoted: %v", err)
	}
}
