package digest

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/countersign/countersign/vocab"
)

func sample() Action {
	return Action{
		RequestID:            "9d0c0a4e-8f5c-4a34-9c1e-2b8f0e6f3a11",
		Decision:             vocab.Approve,
		AuthorizationDetails: []byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"}}]`),
		Tool:                 "transfer",
		ArgsSHA256:           mustArgs(`{"to":"Vendor X","amount":500000,"currency":"USD"}`),
		Display:              "Pay USD 500,000.00 to Vendor X",
		Nonce:                []byte("0123456789abcdef0123456789abcdef"),
		ExpiresAt:            time.Date(2026, 11, 24, 18, 0, 0, 0, time.UTC),
	}
}

func TestComputeIsStableAcrossJSONFormatting(t *testing.T) {
	a := sample()
	b := sample()
	b.ArgsSHA256 = mustArgs("{ \"currency\":\"USD\",\n \"amount\": 5e5, \"to\":\"Vendor X\"}")
	b.AuthorizationDetails = []byte(`[ {"instructedAmount":{"amount":"500000.00","currency":"USD"},"type":"payment_initiation"} ]`)
	da, err := Compute(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Compute(b)
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("digest depends on JSON formatting: %x vs %x", da, db)
	}
}

// Pins the format: any change to the construction must be a new version.
func TestComputeKnownAnswer(t *testing.T) {
	d, err := Compute(sample())
	if err != nil {
		t.Fatal(err)
	}
	// Computed independently (Python hashlib + sorted compact JSON).
	const want = "004fe80145e32c3a4e4df158967fcc9293c13524b7c85c0fd2671f95a9328ffc"
	if got := hex.EncodeToString(d[:]); got != want {
		t.Fatalf("digest = %s, want %s", got, want)
	}
}

func TestEveryFieldChangesTheDigest(t *testing.T) {
	base, _ := Compute(sample())
	mutations := map[string]func(*Action){
		"request id": func(a *Action) { a.RequestID = "other" },
		"decision":   func(a *Action) { a.Decision = vocab.Deny },
		"details":    func(a *Action) { a.AuthorizationDetails = []byte(`[{"type":"deployment"}]`) },
		"tool":       func(a *Action) { a.Tool = "deploy" },
		"args":       func(a *Action) { a.ArgsSHA256 = mustArgs(`{"to":"Vendor Y","amount":500000,"currency":"USD"}`) },
		"display":    func(a *Action) { a.Display = "Pay USD 5.00 to Vendor X" },
		"nonce":      func(a *Action) { a.Nonce = []byte("another nonce of thirty-two byte") },
		"expiry":     func(a *Action) { a.ExpiresAt = a.ExpiresAt.Add(time.Second) },
	}
	for name, mutate := range mutations {
		a := sample()
		mutate(&a)
		d, err := Compute(a)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d == base {
			t.Errorf("changing the %s does not change the digest", name)
		}
	}
}

func TestComputeRejects(t *testing.T) {
	for name, mutate := range map[string]func(*Action){
		"bad decision": func(a *Action) { a.Decision = "maybe" },
		"bad details":  func(a *Action) { a.AuthorizationDetails = []byte(`nope`) },
		"no nonce":     func(a *Action) { a.Nonce = nil },
	} {
		a := sample()
		mutate(&a)
		if _, err := Compute(a); err == nil {
			t.Errorf("%s: Compute succeeded", name)
		}
	}
}

func mustArgs(js string) [32]byte {
	sum, err := ArgsSHA256([]byte(js))
	if err != nil {
		panic(err)
	}
	return sum
}

func TestArgsSHA256RejectsMalformedJSON(t *testing.T) {
	if _, err := ArgsSHA256([]byte(`{"to":`)); err == nil {
		t.Fatal("ArgsSHA256 accepted malformed JSON")
	}
}
