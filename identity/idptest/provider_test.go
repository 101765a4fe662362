package idptest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func getJSON(t *testing.T, url string, into any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatal(err)
	}
}

type discovery struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	GrantTypes            []string `json:"grant_types_supported"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
}

func discover(t *testing.T, p *Provider) discovery {
	t.Helper()
	var d discovery
	getJSON(t, p.Issuer()+"/.well-known/openid-configuration", &d)
	return d
}

// verify checks a JWT's signature against the provider's published JWKS, as a
// relying party or resource server does, and returns its claims.
func verify(t *testing.T, p *Provider, token string) map[string]any {
	t.Helper()
	var keys jose.JSONWebKeySet
	getJSON(t, discover(t, p).JWKSURI, &keys)
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	found := keys.Key(jws.Signatures[0].Header.KeyID)
	if len(found) != 1 {
		t.Fatalf("kid %q: %d keys in the JWKS", jws.Signatures[0].Header.KeyID, len(found))
	}
	payload, err := jws.Verify(found[0])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// hasAudience reports whether aud, a string or an array, names want.
func hasAudience(claims map[string]any, want string) bool {
	switch aud := claims["aud"].(type) {
	case string:
		return aud == want
	case []any:
		return slices.Contains(aud, any(want))
	}
	return false
}

func TestDiscovery(t *testing.T) {
	p := New(t)
	d := discover(t, p)
	if d.Issuer != p.Issuer() || !strings.HasPrefix(p.Issuer(), "http://127.0.0.1:") {
		t.Fatalf("issuer %q, provider says %q", d.Issuer, p.Issuer())
	}
	if d.TokenEndpoint != p.TokenURL() || d.AuthorizationEndpoint != p.AuthURL() {
		t.Fatalf("endpoints %+v", d)
	}
	for _, g := range []string{"authorization_code", "refresh_token", "client_credentials"} {
		if !slices.Contains(d.GrantTypes, g) {
			t.Errorf("grant %s not offered: %v", g, d.GrantTypes)
		}
	}
	if !slices.Contains(d.CodeChallengeMethods, "S256") {
		t.Errorf("S256 not offered: %v", d.CodeChallengeMethods)
	}
	var keys jose.JSONWebKeySet
	getJSON(t, d.JWKSURI, &keys)
	if len(keys.Keys) != 1 || !keys.Keys[0].IsPublic() {
		t.Fatalf("JWKS: %+v", keys)
	}
	p.RotateKey()
	getJSON(t, d.JWKSURI, &keys)
	if len(keys.Keys) != 2 {
		t.Fatalf("after a rotation the JWKS has %d keys, want both", len(keys.Keys))
	}
}

// relyingParty is a real redirect URI on 127.0.0.1 that records the query of
// the redirect it receives.
func relyingParty(t *testing.T) (string, chan url.Values) {
	got := make(chan url.Values, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Query()
		io.WriteString(w, "signed in")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/callback", got
}

func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func codeFlowConfig(p *Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "approver-page", ClientSecret: "page-secret", RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: p.AuthURL(), TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader},
		Scopes:   []string{"openid", "email", "profile", "offline_access"},
	}
}

// authorize runs the browser's part of the code flow: the authorization
// request, the login form when the provider shows it, and the redirect back.
func authorize(t *testing.T, p *Provider, b *http.Client, authURL, username string, got chan url.Values) url.Values {
	t.Helper()
	resp, err := b.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), `id="username"`) {
		if username == "" {
			t.Fatal("the provider asked for a login")
		}
		id := resp.Request.URL.Query().Get(authRequestParam)
		resp, err = b.PostForm(p.Issuer()+loginPath, url.Values{authRequestParam: {id}, "username": {username}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	} else if username != "" {
		t.Fatal("the provider did not ask for a login")
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorization ended with %s: %s", resp.Status, body)
	}
	select {
	case q := <-got:
		return q
	default:
		t.Fatalf("no redirect to the relying party; last page %s: %s", resp.Request.URL, body)
		return nil
	}
}

func TestAuthorizationCodeFlow(t *testing.T) {
	p := New(t)
	p.AddUser("alice", "alice@example.com", "finance-approvers", "staff")
	redirect, got := relyingParty(t)
	p.AddClient("approver-page", "page-secret", []string{redirect}, GrantAuthorizationCode, GrantRefreshToken)
	p.SetAuthContext("urn:idptest:mfa", "pwd", "hwk")
	cfg := codeFlowConfig(p, redirect)
	ctx := context.Background()

	b := browser(t)
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, p, b, cfg.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "nonce-1")), "alice", got)
	if q.Get("state") != "state-1" || q.Get("code") == "" {
		t.Fatalf("redirect query %v", q)
	}
	if _, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption("wrong-verifier-wrong-verifier-wrong-verifier")); err == nil {
		t.Fatal("a code redeemed with the wrong PKCE verifier")
	}

	q = authorize(t, p, b, cfg.AuthCodeURL("state-2", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "nonce-2")), "", got)
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	claims := verify(t, p, idToken)
	if claims["iss"] != p.Issuer() || claims["sub"] != "alice" || !hasAudience(claims, "approver-page") ||
		claims["nonce"] != "nonce-2" || claims["email"] != "alice@example.com" || claims["acr"] != "urn:idptest:mfa" {
		t.Fatalf("ID token claims %v", claims)
	}
	if _, ok := claims["auth_time"].(float64); !ok {
		t.Fatalf("no auth_time: %v", claims)
	}
	if g, _ := json.Marshal(claims["groups"]); string(g) != `["finance-approvers","staff"]` {
		t.Fatalf("groups %s", g)
	}
	if a, _ := json.Marshal(claims["amr"]); string(a) != `["pwd","hwk"]` {
		t.Fatalf("amr %s", a)
	}
	authTime := claims["auth_time"]

	// Userinfo says the groups of this moment.
	p.SetGroups("alice", "staff")
	var info map[string]any
	userinfo(t, discover(t, p).UserinfoEndpoint, tok.AccessToken, &info)
	if g, _ := json.Marshal(info["groups"]); info["sub"] != "alice" || string(g) != `["staff"]` {
		t.Fatalf("userinfo %v", info)
	}

	// A refresh keeps the login's auth_time and carries the new groups.
	old := *tok
	old.Expiry = old.Expiry.Add(-48 * 3600e9)
	refreshed, err := cfg.TokenSource(ctx, &old).Token()
	if err != nil {
		t.Fatal(err)
	}
	claims = verify(t, p, refreshed.Extra("id_token").(string))
	if g, _ := json.Marshal(claims["groups"]); claims["auth_time"] != authTime || string(g) != `["staff"]` {
		t.Fatalf("refreshed ID token %v", claims)
	}

	// prompt=login asks again even with a session.
	q = authorize(t, p, b, cfg.AuthCodeURL("state-3", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "login")), "alice", got)
	if q.Get("code") == "" {
		t.Fatalf("redirect query %v", q)
	}

	// So does max_age=0: the session's login is older than that.
	q = authorize(t, p, b, cfg.AuthCodeURL("state-4", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("max_age", "0")), "alice", got)
	if q.Get("code") == "" {
		t.Fatalf("redirect query %v", q)
	}

	// A leaver: no refresh, no userinfo, no login.
	p.RemoveUser("alice")
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken}).Token(); err == nil {
		t.Fatal("a removed user's refresh token still works")
	}
	if status := userinfo(t, discover(t, p).UserinfoEndpoint, refreshed.AccessToken, &info); status == http.StatusOK {
		t.Fatalf("userinfo of a removed user answered %v", info)
	}
	resp, err := browser(t).PostForm(p.Issuer()+loginPath, url.Values{authRequestParam: {"x"}, "username": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("a removed user signed in")
	}
}

func userinfo(t *testing.T, endpoint, accessToken string, into any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, endpoint, nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		json.NewDecoder(resp.Body).Decode(into)
	}
	return resp.StatusCode
}

func TestAutoLogin(t *testing.T) {
	p := New(t)
	p.AddUser("bob", "bob@example.com", "sre")
	redirect, got := relyingParty(t)
	p.AddClient("approver-page", "page-secret", []string{redirect}, GrantAuthorizationCode)
	p.SetAutoLogin("bob")
	cfg := codeFlowConfig(p, redirect)
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, p, browser(t), cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), "", got)
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if claims := verify(t, p, tok.Extra("id_token").(string)); claims["sub"] != "bob" {
		t.Fatalf("claims %v", claims)
	}
}

func TestClientCredentials(t *testing.T) {
	p := New(t)
	p.AddClient("agent-7", "agent-secret", nil, GrantClientCredentials)
	p.AddClient("page", "s", nil, GrantAuthorizationCode)
	ctx := context.Background()
	cc := clientcredentials.Config{ClientID: "agent-7", ClientSecret: "agent-secret", TokenURL: p.TokenURL(), Scopes: []string{"mcp:tools"},
		EndpointParams: url.Values{"resource": {"http://127.0.0.1:9/mcp"}}}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	claims := verify(t, p, tok.AccessToken)
	if claims["iss"] != p.Issuer() || claims["sub"] != "agent-7" || claims["client_id"] != "agent-7" ||
		!hasAudience(claims, "http://127.0.0.1:9/mcp") || claims["scope"] != "mcp:tools" {
		t.Fatalf("access token claims %v", claims)
	}

	// Without a resource: the configured audience.
	p.SetClientAudience("agent-7", "https://countersign.example/mcp")
	cc.EndpointParams = nil
	tok, err = cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if claims := verify(t, p, tok.AccessToken); !hasAudience(claims, "https://countersign.example/mcp") {
		t.Fatalf("aud %v", claims["aud"])
	}

	for name, bad := range map[string]clientcredentials.Config{
		"wrong secret":       {ClientID: "agent-7", ClientSecret: "nope", TokenURL: p.TokenURL()},
		"grant not allowed":  {ClientID: "page", ClientSecret: "s", TokenURL: p.TokenURL()},
		"resource with hash": {ClientID: "agent-7", ClientSecret: "agent-secret", TokenURL: p.TokenURL(), EndpointParams: url.Values{"resource": {"https://x/mcp#f"}}},
	} {
		var re *oauth2.RetrieveError
		if _, err := bad.Token(ctx); !errors.As(err, &re) || re.Response.StatusCode/100 != 4 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSignJWT(t *testing.T) {
	p := New(t)
	tok := p.SignJWT(map[string]any{"iss": p.Issuer(), "exp": 1})
	if claims := verify(t, p, tok); claims["exp"] != float64(1) {
		t.Fatalf("claims %v", claims)
	}
}

func TestStopStart(t *testing.T) {
	p := New(t)
	discover(t, p)
	p.Stop()
	if resp, err := http.Get(p.Issuer() + "/.well-known/openid-configuration"); err == nil {
		resp.Body.Close()
		t.Fatal("a stopped provider answered")
	}
	p.Start()
	if d := discover(t, p); d.Issuer != p.Issuer() {
		t.Fatalf("issuer after restart %q", d.Issuer)
	}
}
