package config

import (
	"fmt"
	"net/url"
	"strings"
)

// The claims of an access token that may name its agent (http.oauth.agent_claim).
const (
	AgentClaimClientID = "client_id" // RFC 9068: the OAuth client the token was issued to
	AgentClaimAZP      = "azp"       // the authorized party (Entra ID, Auth0, Keycloak)
	AgentClaimSub      = "sub"       // the subject; for client credentials usually the client
)

// OAuth makes the HTTP listener an OAuth 2.1 resource server, as the MCP
// authorization specification asks: agents present JWT access tokens from the
// authorization server, beside (or instead of) the static tokens of
// http.agents. It is on when any of its keys is set.
type OAuth struct {
	// Issuer is the authorization server, as its metadata (RFC 8414 or
	// OpenID discovery) states it; default identity.issuer.
	Issuer string `mapstructure:"issuer"`
	// Audience is what a token's aud must name: default this server's
	// resource URL (RFC 8707), http.issuer (or the listener's URL) + "/mcp".
	Audience string `mapstructure:"audience"`
	// Scopes must all be granted to a token (its scope or scp claim).
	Scopes []string `mapstructure:"scopes"`
	// AgentClaim names the claim whose value is the agent, as policy and
	// the audit log see it: client_id (default), azp or sub.
	AgentClaim string `mapstructure:"agent_claim"`
}

// Enabled reports whether agents may present OAuth access tokens.
func (o OAuth) Enabled() bool {
	return o.Issuer != "" || o.Audience != "" || len(o.Scopes) > 0 || o.AgentClaim != ""
}

// applyOAuthDefaults fills in the issuer from identity.issuer and the agent
// claim.
func (c *Config) applyOAuthDefaults() {
	o := &c.HTTP.OAuth
	if !o.Enabled() {
		return
	}
	if o.Issuer == "" {
		o.Issuer = c.Identity.Issuer
	}
	if o.AgentClaim == "" {
		o.AgentClaim = AgentClaimClientID
	}
}

func (c *Config) validateOAuth(v *validator) {
	o := c.HTTP.OAuth
	if !o.Enabled() {
		return
	}
	if o.Issuer == "" {
		v.fail("http.oauth.issuer", "required: the authorization server's issuer URL (or set identity.issuer)")
	} else if u, err := url.Parse(o.Issuer); err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		!(u.Scheme == "https" || u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
		v.fail("http.oauth.issuer", "expected an https URL without query or fragment (http only on loopback), got %q", o.Issuer)
	}
	// Most providers put the resource URL (RFC 8707) in aud; Entra ID its
	// application id, a bare GUID. Either way one value, nothing around it.
	if o.Audience != "" && (strings.TrimSpace(o.Audience) != o.Audience || strings.ContainsAny(o.Audience, " \t\r\n#")) {
		v.fail("http.oauth.audience", "expected the resource URI (https://countersign.example.com/mcp) or the provider's id for this server, without spaces or a fragment, got %q", o.Audience)
	}
	// Approvers' sign-ins get ID tokens for identity.client_id: an agent
	// presenting one must not pass for an access token for this server.
	if o.Audience != "" && o.Audience == c.Identity.ClientID {
		v.fail("http.oauth.audience", "is identity.client_id: approvers' ID tokens would be for this audience too; give agents' tokens an audience of their own (the resource URL, or another application)")
	}
	seen := map[string]bool{}
	for i, s := range o.Scopes {
		p := fmt.Sprintf("http.oauth.scopes[%d]", i)
		switch {
		case s == "" || strings.ContainsAny(s, " \t\r\n\"\\"):
			v.fail(p, "expected a scope token (no spaces, quotes or backslashes), got %q", s)
		case seen[s]:
			v.fail(p, "duplicate scope %q", s)
		}
		seen[s] = true
	}
	v.oneOf("http.oauth.agent_claim", o.AgentClaim, AgentClaimClientID, AgentClaimAZP, AgentClaimSub)
}
