package config

import (
	"strings"
	"testing"

	"github.com/countersign/countersign/vocab"
)

// ciba is a policy entry, not a tool: configuring it is valid, and so is an
// issuer URL, but not one with a query.
func TestCIBAPolicyAndIssuer(t *testing.T) {
	c, err := Parse([]byte("tools:\n  ciba:\n    level: high\n    approvers: [alice]\napprovers: [{id: alice, name: Alice}]\nhttp:\n  issuer: https://countersign.example.com\n"), "ciba.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Tools["ciba"].Level != vocab.LevelHigh || c.HTTP.Issuer != "https://countersign.example.com" {
		t.Errorf("tools.ciba %+v, http.issuer %q", c.Tools["ciba"], c.HTTP.Issuer)
	}
	for _, bad := range []string{"ftp://x", "https://x/?a=b", "https://x/#f", "not a url"} {
		_, err := Parse([]byte(minimal+"http:\n  issuer: \""+bad+"\"\n"), "bad.yaml")
		if err == nil || !strings.Contains(err.Error(), "http.issuer") {
			t.Errorf("issuer %q: %v", bad, err)
		}
	}
}
