package config

import (
	"strings"
	"testing"
)

func TestOAuthOffByDefault(t *testing.T) {
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.OAuth.Enabled() {
		t.Fatalf("http.oauth on by default: %+v", c.HTTP.OAuth)
	}
}

func TestOAuthDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal+`
http:
  addr: 0.0.0.0:8711
  oauth:
    issuer: https://idp.example.com/realms/acme
    scopes: [mcp:tools]
`), "oauth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := c.HTTP.OAuth
	if !o.Enabled() || o.AgentClaim != AgentClaimClientID || o.Audience != "" || strings.Join(o.Scopes, " ") != "mcp:tools" {
		t.Fatalf("http.oauth %+v", o)
	}
	// OAuth stands in for static tokens on a listener beyond loopback.
	if len(c.HTTP.Agents) != 0 {
		t.Fatalf("agents %+v", c.HTTP.Agents)
	}
}

// Like every key, http.oauth can come from the environment alone.
func TestOAuthFromTheEnvironment(t *testing.T) {
	t.Setenv("COUNTERSIGN_HTTP_OAUTH_ISSUER", "https://idp.example.com")
	t.Setenv("COUNTERSIGN_HTTP_OAUTH_SCOPES", "mcp:tools, mcp:read")
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if o := c.HTTP.OAuth; !o.Enabled() || o.Issuer != "https://idp.example.com" || strings.Join(o.Scopes, " ") != "mcp:tools mcp:read" {
		t.Fatalf("http.oauth %+v", o)
	}
}

// Without its own issuer, http.oauth takes identity.issuer.
func TestOAuthIssuerFromIdentity(t *testing.T) {
	c := &Config{HTTP: HTTP{OAuth: OAuth{Scopes: []string{"mcp:tools"}}}, Identity: Identity{Issuer: "https://login.example.com"}}
	c.applyOAuthDefaults()
	if c.HTTP.OAuth.Issuer != "https://login.example.com" {
		t.Fatalf("issuer %q", c.HTTP.OAuth.Issuer)
	}
	c = &Config{Identity: Identity{Issuer: "https://login.example.com"}}
	c.applyOAuthDefaults()
	if c.HTTP.OAuth.Enabled() {
		t.Fatal("identity.issuer alone turned http.oauth on")
	}
	// Approvers' ID tokens are for identity.client_id: never agents' audience.
	c = &Config{HTTP: HTTP{OAuth: OAuth{Issuer: "https://login.example.com", Audience: "countersign"}}, Identity: Identity{ClientID: "countersign"}}
	c.applyOAuthDefaults()
	var v validator
	c.validateOAuth(&v)
	if len(v.problems) != 1 || v.problems[0].path != "http.oauth.audience" || !strings.Contains(v.problems[0].msg, "is identity.client_id") {
		t.Fatalf("problems %+v", v.problems)
	}
}

func TestOAuthProblemsNameTheirPath(t *testing.T) {
	for _, tc := range []struct{ oauth, want string }{
		{"{scopes: [mcp:tools]}", "http.oauth.issuer: required"},
		{"{issuer: http://idp.example.com}", "http.oauth.issuer: expected an https URL"},
		{"{issuer: 'https://idp.example.com/?x=1'}", "http.oauth.issuer: expected an https URL"},
		{"{issuer: https://idp.example.com, audience: 'a b'}", "http.oauth.audience: expected the resource URI"},
		{"{issuer: https://idp.example.com, audience: 'https://cs.example.com/mcp#x'}", "http.oauth.audience: expected the resource URI"},
		{"{issuer: https://idp.example.com, scopes: ['mcp tools']}", "http.oauth.scopes[0]: expected a scope token"},
		{"{issuer: https://idp.example.com, scopes: [a, a]}", "http.oauth.scopes[1]: duplicate scope"},
		{"{issuer: https://idp.example.com, agent_claim: email}", "http.oauth.agent_claim: expected one of client_id, azp, sub"},
	} {
		_, err := Parse([]byte(minimal+"http:\n  oauth: "+tc.oauth+"\n"), "bad.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.oauth, err, tc.want)
		}
	}
	// A loopback issuer may be plain http (the tests' provider is).
	if _, err := Parse([]byte(minimal+"http:\n  oauth: {issuer: 'http://127.0.0.1:9000', audience: 'api://countersign'}\n"), "ok.yaml"); err != nil {
		t.Fatal(err)
	}
}
