package ciba

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"github.com/countersign/countersign/authzdetails"
	"github.com/gowebpki/jcs"
)

var detailSeeds = []string{
	deployDetails,
	`[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorName":"Merchant A","creditorAccount":{"iban":"DE02100100109307118603"},"remittanceInformationUnstructured":"Ref 42"}]`,
	`[{"type":"secret_access","name":"prod-db-password","classification":"restricted"}]`,
	`[{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{"path":"/srv/a.txt","mode":420,"tags":["a","b"],"n":1e2}}]`,
	`[{"type":"deployment","service":"api","service":"db","version":"1","environment":"prod"}]`,
	`[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"1.00"},"creditorName":"A\u202eB"}]`,
	`[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]`,
	`[{"type":"x"}] trailing`,
	`[1e999]`,
}

// Whatever the parser accepts is canonical JSON of known, schema-valid
// details that survives a second parse unchanged.
func FuzzAuthorizationDetails(f *testing.F) {
	for _, s := range detailSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		canon, value, err := parseDetails(raw)
		if err != nil {
			if canon != nil || value != nil {
				t.Fatal("refused, yet returned a value")
			}
			return
		}
		again, err := jcs.Transform(canon)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("accepted %q as %s, which is not canonical (%v)", raw, canon, err)
		}
		canon2, value2, err := parseDetails(string(canon))
		if err != nil || !bytes.Equal(canon2, canon) || len(value2) != len(value) {
			t.Fatalf("accepted %q, but not its canonical form %s: %v", raw, canon, err)
		}
		if len(value) == 0 || len(value) > maxDetails {
			t.Fatalf("accepted %d details", len(value))
		}
		for _, d := range value {
			typ, _ := d.(map[string]any)["type"].(string)
			if !slices.Contains(authzdetails.Types(), typ) {
				t.Fatalf("accepted unknown type %q", typ)
			}
		}
	})
}

// Whatever form body the endpoint accepts has openid in scope, a login
// hint, a binding message fit to show, canonical details, and arguments
// that policy and the digest can use.
func FuzzParseAuthRequest(f *testing.F) {
	f.Add(authForm().Encode())
	f.Add(authForm(set("requested_expiry", "60"), set("scope", "openid openid")).Encode())
	f.Add(authForm(del("binding_message")).Encode())
	f.Add("scope=openid&login_hint=alice&authorization_details=%5B%5D")
	f.Add("scope=openid;login_hint=alice")
	f.Add("scope=openid&scope=openid")
	for _, s := range detailSeeds {
		f.Add(authForm(set("authorization_details", s)).Encode())
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, e := parseForm(body)
		if e != nil {
			if e.Code != CodeInvalidRequest {
				t.Fatalf("form error %s", e.Code)
			}
			return
		}
		a, e := parseAuthRequest(form)
		if e != nil {
			switch e.Code {
			case CodeInvalidRequest, CodeInvalidScope, CodeInvalidBindingMsg, CodeInvalidAuthzDetails:
			default:
				t.Fatalf("unexpected error code %s", e.Code)
			}
			if a != nil {
				t.Fatal("refused, yet returned a request")
			}
			return
		}
		if !slices.Contains(a.Scope, "openid") || a.LoginHint == "" || len(a.Details) == 0 {
			t.Fatalf("accepted %q as %+v", body, a)
		}
		if a.BindingMessage != "" && checkBindingMessage(a.BindingMessage) != "" {
			t.Fatalf("accepted binding message %q", a.BindingMessage)
		}
		if _, err := json.Marshal(a.args()); err != nil {
			t.Fatalf("args of %q do not encode: %v", body, err)
		}
		if v, _ := url.ParseQuery(body); v.Get("authorization_details") == "" {
			t.Fatalf("accepted without authorization_details: %q", body)
		}
	})
}
