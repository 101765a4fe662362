package tools

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzPrepare feeds arbitrary JSON arguments to every tool's Prepare: it
// must never panic, must refuse with an *ArgError or accept, and what it
// accepts must carry valid authorization details.
func FuzzPrepare(f *testing.F) {
	for _, s := range []string{
		`{"from":"operating","to":"Vendor X","amount":500000,"currency":"USD"}`,
		`{"from":"operating","to":"Vendor X","amount":1.005,"currency":"USD","memo":"x","idempotency_key":"k"}`,
		`{"from":"payroll","to":"\u202e","amount":1e309,"currency":"EUR"}`,
		`{"service":"api","version":"1.0; rm -rf /","environment":"staging"}`,
		`{"name":"../x"}`, `{"name":"prod-db-password"}`, `{"limit":7}`, `{"account":"operating"}`, `{}`,
	} {
		f.Add(s)
	}
	r, _ := registry(f, shippedFor(f))
	tools := r.Specs()
	f.Fuzz(func(t *testing.T, raw string) {
		var args map[string]any
		if json.Unmarshal([]byte(raw), &args) != nil {
			return
		}
		for _, tool := range tools {
			call, err := tool.Prepare(context.Background(), args)
			if err != nil {
				var ae *ArgError
				if !errors.As(err, &ae) {
					t.Fatalf("%s: %s: error %v is not an *ArgError", tool.Def.Name, raw, err)
				}
				continue
			}
			if call.Details != nil && !json.Valid(call.Details) {
				t.Fatalf("%s: invalid details %s", tool.Def.Name, call.Details)
			}
			if _, err := json.Marshal(call.Args); err != nil {
				t.Fatalf("%s: args do not encode: %v", tool.Def.Name, err)
			}
		}
	})
}
