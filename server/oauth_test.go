package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity/idptest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2/clientcredentials"
)

const scope = "mcp:tools"

// oauthStack is a server whose agents present access tokens from p (and the
// static tokens of withAgents), and the provider's clients: billing-agent
// may have mcp:tools, reader asks for no scope.
func oauthStack(t *testing.T, p *idptest.Provider) (*stack, string) {
	t.Helper()
	p.AddClient("billing-agent", "billing-secret", nil, idptest.GrantClientCredentials)
	s := newStack(t, func(c *config.Config) {
		withAgents(c)
		c.HTTP.OAuth = config.OAuth{Issuer: p.Issuer(), Scopes: []string{scope}, AgentClaim: config.AgentClaimClientID}
	})
	return s, s.serveHTTP(t)
}

// credentials is the client credentials grant of billing-agent for resource.
func credentials(p *idptest.Provider, resource string, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{ClientID: "billing-agent", ClientSecret: "billing-secret", TokenURL: p.TokenURL(),
		Scopes: scopes, EndpointParams: url.Values{"resource": {resource}}}
}

func accessToken(t *testing.T, cc *clientcredentials.Config) string {
	t.Helper()
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// initialize posts an MCP initialize to /mcp with token ("" for none) and
// returns the status and the challenge.
func initialize(t *testing.T, base, token string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// callAs connects the go-sdk client over Streamable HTTP with token, calls
// get_balance and checks the audit log names agent as its caller.
func callAs(t *testing.T, s *stack, base, token, agent string) {
	t.Helper()
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1, HTTPClient: withToken(token)}, protocolVersions[0])
	if res := servertest.CallTool(t, cs, "get_balance", map[string]any{}); res.IsError {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
	es := s.entries(t, vocab.KindCallExecuted)
	if len(es) == 0 || es[len(es)-1].Agent != agent {
		t.Fatalf("the audit log does not name %s as the caller: %+v", agent, es)
	}
	cs.Close()
}

func TestOAuthAccessTokensAuthenticateAgents(t *testing.T) {
	p := idptest.New(t)
	s, base := oauthStack(t, p)
	resource := base + "/mcp"
	metadataURL := base + "/.well-known/oauth-protected-resource/mcp"

	// The Protected Resource Metadata, at the path-suffixed location and
	// the root, without a token.
	for _, u := range []string{metadataURL, base + "/.well-known/oauth-protected-resource"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		var prm struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			ScopesSupported      []string `json:"scopes_supported"`
		}
		err = json.NewDecoder(resp.Body).Decode(&prm)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || prm.Resource != resource ||
			strings.Join(prm.AuthorizationServers, " ") != p.Issuer() || strings.Join(prm.ScopesSupported, " ") != scope {
			t.Fatalf("%s: %d %+v %v", u, resp.StatusCode, prm, err)
		}
	}

	// No token: 401, and where to find out how to get one.
	status, challenge := initialize(t, base, "")
	if status != http.StatusUnauthorized || challenge != `Bearer resource_metadata="`+metadataURL+`", scope="mcp:tools"` {
		t.Fatalf("without a token: %d %q", status, challenge)
	}

	// A client credentials token: the agent is its client_id, in the audit
	// log too; a static token works beside it.
	callAs(t, s, base, accessToken(t, credentials(p, resource, scope)), "billing-agent")
	callAs(t, s, base, agentTokens["agent-a"], "agent-a")

	now := time.Now().Unix()
	claims := func(edit func(map[string]any)) string {
		c := map[string]any{"iss": p.Issuer(), "sub": "billing-agent", "client_id": "billing-agent", "aud": resource,
			"scope": scope, "iat": now, "exp": now + 300}
		edit(c)
		return p.SignJWT(c)
	}
	valid := accessToken(t, credentials(p, resource, scope))
	tampered := valid[:len(valid)-4] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, valid[len(valid)-4:])
	other := idptest.New(t)
	other.AddClient("billing-agent", "billing-secret", nil, idptest.GrantClientCredentials)

	for _, tc := range []struct {
		name, token string
		status      int
		challenge   string
	}{
		{"another audience", accessToken(t, credentials(p, "https://other.example.com/mcp", scope)), 401, `error="invalid_token", error_description="the token is not for this resource (aud)"`},
		{"expired", claims(func(c map[string]any) { c["exp"] = now - 60 }), 401, `error="invalid_token", error_description="the token expired at `},
		{"no expiry", claims(func(c map[string]any) { delete(c, "exp") }), 401, `error="invalid_token", error_description="the token has no expiry (exp)"`},
		{"not yet valid", claims(func(c map[string]any) { c["nbf"] = now + 3600 }), 401, `error="invalid_token", error_description="the token is not valid yet (nbf)"`},
		{"bad signature", tampered, 401, `error="invalid_token", error_description="the token's signature does not verify`},
		{"another provider's key", accessToken(t, credentials(other, resource, scope)), 401, `error="invalid_token", error_description="the token's signature does not verify`},
		{"another issuer", claims(func(c map[string]any) { c["iss"] = other.Issuer() }), 401, `error="invalid_token", error_description="the token is not from the configured authorization server (iss)"`},
		{"missing scope", accessToken(t, credentials(p, resource, "mcp:read")), 403, `error="insufficient_scope", error_description="the token lacks the scope mcp:tools"`},
		{"no agent claim", claims(func(c map[string]any) { delete(c, "client_id") }), 401, `error="invalid_token", error_description="the token names no agent in its client_id claim"`},
		{"not a JWT", "opaque-token", 401, `error="invalid_token"`},
		{"an ID token", claims(func(c map[string]any) { c["nonce"] = "n-1" }), 401, `error="invalid_token", error_description="an ID token is not an access token (it has nonce)"`},
		{"not an agent id", claims(func(c map[string]any) { c["client_id"] = "billing agent!" }), 401, `error="invalid_token", error_description="the token's client_id 'billing agent!' cannot name an agent`},
		{"a static agent's name", claims(func(c map[string]any) { c["client_id"] = "Agent-A" }), 401, `error="invalid_token", error_description="the token's client_id names the agent agent-a, which authenticates otherwise`},
		{"the stdio agent's name", claims(func(c map[string]any) { c["client_id"] = "stdio" }), 401, `error="invalid_token", error_description="the token's client_id names the agent stdio, which authenticates otherwise`},
	} {
		status, challenge := initialize(t, base, tc.token)
		if status != tc.status || !strings.HasPrefix(challenge, "Bearer "+tc.challenge) ||
			!strings.Contains(challenge, `resource_metadata="`+metadataURL+`"`) || !strings.HasSuffix(challenge, `scope="mcp:tools"`) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, challenge, tc.status, tc.challenge)
		}
	}
	// Providers' client ids are often mixed case; agent names are ids.
	callAs(t, s, base, claims(func(c map[string]any) { c["client_id"] = "0oaBillingAgent7" }), "0oabillingagent7")
	for _, e := range s.entries(t, vocab.KindCallExecuted) {
		if e.Agent != "billing-agent" && e.Agent != "agent-a" && e.Agent != "0oabillingagent7" {
			t.Errorf("a refused token reached the guard: %+v", e)
		}
	}
}

// While the provider cannot be reached, tokens signed by keys already fetched
// go on working; a key not seen before, which would need the provider's key
// set, is refused, and so is every token before the provider was first read.
func TestOAuthWhileTheProviderIsDown(t *testing.T) {
	p := idptest.New(t)
	p.AddClient("billing-agent", "billing-secret", nil, idptest.GrantClientCredentials)
	p.Stop()
	// An audience that is the provider's id for this server (Entra ID's
	// application id), not a URL: the metadata still names the URL.
	const audience = "00000000-0000-0000-0000-0000000000aa"
	s := newStack(t, func(c *config.Config) {
		c.HTTP.OAuth = config.OAuth{Issuer: p.Issuer(), Audience: audience, Scopes: []string{scope}, AgentClaim: config.AgentClaimClientID}
	})
	base := s.serveHTTP(t)
	resp, err := http.Get(base + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	var prm struct{ Resource string }
	json.NewDecoder(resp.Body).Decode(&prm)
	resp.Body.Close()
	if prm.Resource != base+"/mcp" {
		t.Fatalf("metadata resource %q, want the URL %s/mcp", prm.Resource, base)
	}
	resource := audience
	now := time.Now().Unix()
	token := p.SignJWT(map[string]any{"iss": p.Issuer(), "sub": "billing-agent", "client_id": "billing-agent", "aud": resource,
		"scope": scope, "iat": now, "exp": now + 600})

	status, challenge := initialize(t, base, token)
	if status != http.StatusUnauthorized || !strings.Contains(challenge, `error_description="the authorization server cannot be reached`) {
		t.Fatalf("before the provider was ever read: %d %q", status, challenge)
	}

	p.Start()
	callAs(t, s, base, token, "billing-agent")

	p.Stop()
	callAs(t, s, base, token, "billing-agent")

	p.RotateKey()
	rotated := p.SignJWT(map[string]any{"iss": p.Issuer(), "sub": "billing-agent", "client_id": "billing-agent", "aud": resource,
		"scope": scope, "iat": now, "exp": now + 600})
	status, challenge = initialize(t, base, rotated)
	if status != http.StatusUnauthorized || !strings.Contains(challenge, `error_description="the token's signing key is not known and the authorization server's keys cannot be fetched"`) {
		t.Fatalf("a new key while the provider is down: %d %q", status, challenge)
	}

	p.Start()
	callAs(t, s, base, rotated, "billing-agent")
}

// A reload swaps the resource server whole (SetOAuth, SetAgents): a token
// accepted before is accepted after only if the new configuration accepts
// it, whether the scopes, the issuer or the agents' names changed; turned
// off, no token is taken and no metadata served.
func TestOAuthReloadSwapsTheResourceServer(t *testing.T) {
	p := idptest.New(t)
	s, base := oauthStack(t, p)
	resource := base + "/mcp"
	token := accessToken(t, credentials(p, resource, scope))
	oauth := s.cfg.HTTP.OAuth
	expect := func(what string, status int, challenge string) {
		t.Helper()
		got, ch := initialize(t, base, token)
		if got != status || !strings.Contains(ch, challenge) {
			t.Errorf("%s: %d %q, want %d %q", what, got, ch, status, challenge)
		}
	}
	metadataScopes := func() string {
		t.Helper()
		resp, err := http.Get(base + "/.well-known/oauth-protected-resource/mcp")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var prm struct {
			ScopesSupported []string `json:"scopes_supported"`
		}
		json.NewDecoder(resp.Body).Decode(&prm)
		return fmt.Sprint(resp.StatusCode, " ", strings.Join(prm.ScopesSupported, " "))
	}
	expect("before the reload", http.StatusOK, "")

	more := oauth
	more.Scopes = []string{scope, "mcp:admin"}
	s.server.SetOAuth(more)
	expect("a scope more required", http.StatusForbidden, `error="insufficient_scope", error_description="the token lacks the scope mcp:admin"`)
	if got := metadataScopes(); got != "200 mcp:tools mcp:admin" {
		t.Errorf("metadata after the reload: %s", got)
	}
	s.server.SetOAuth(oauth)
	expect("the scope back as it was", http.StatusOK, "")

	other := idptest.New(t)
	elsewhere := oauth
	elsewhere.Issuer = other.Issuer()
	s.server.SetOAuth(elsewhere)
	expect("another issuer", http.StatusUnauthorized, "does not verify against the authorization server's keys") // the new issuer's
	s.server.SetOAuth(oauth)

	agents := append(slices.Clone(s.cfg.HTTP.Agents), config.Agent{ID: "billing-agent", TokenSHA256: strings.Repeat("ab", 32)})
	s.server.SetAgents(agents)
	expect("a static agent now named as the token's", http.StatusUnauthorized, "names the agent billing-agent, which authenticates otherwise")
	s.server.SetAgents(s.cfg.HTTP.Agents)
	expect("that agent removed again", http.StatusOK, "")

	s.server.SetOAuth(config.OAuth{})
	expect("http.oauth off", http.StatusUnauthorized, `Bearer realm="countersign"`)
	if got := metadataScopes(); !strings.HasPrefix(got, "404") {
		t.Errorf("metadata with http.oauth off: %s", got)
	}
	callAs(t, s, base, agentTokens["agent-a"], "agent-a")
}
