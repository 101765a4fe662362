package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity/idptest"
	"golang.org/x/oauth2/clientcredentials"
)

// SIGHUP with a changed http.oauth: the serving binary checks the next
// request with the new configuration, so a token it took before is
// refused once a scope it lacks is required, and taken again when the
// requirement is dropped.
func TestSIGHUPSwapsTheOAuthResourceServer(t *testing.T) {
	t.Parallel() // a site and processes of its own
	p := idptest.New(t)
	p.AddClient("billing-agent", "billing-secret", nil, idptest.GrantClientCredentials)
	s := newSite(t, func(c *config.Config) {
		c.HTTP.OAuth = config.OAuth{Issuer: p.Issuer(), Scopes: []string{"mcp:tools"}}
	})
	n := s.start()
	cc := clientcredentials.Config{ClientID: "billing-agent", ClientSecret: "billing-secret", TokenURL: p.TokenURL(),
		Scopes: []string{"mcp:tools"}, EndpointParams: url.Values{"resource": {n.mcp}}}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	initialize := func() (int, string) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
		req, _ := http.NewRequest(http.MethodPost, n.mcp, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	if status, _ := initialize(); status != http.StatusOK {
		t.Fatalf("the token before any reload: %d", status)
	}
	s.rewrite(func(c *config.Config) { c.HTTP.OAuth.Scopes = []string{"mcp:tools", "mcp:admin"} })
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload requiring mcp:admin: %v", line)
	}
	if status, challenge := initialize(); status != http.StatusForbidden || !strings.Contains(challenge, "the token lacks the scope mcp:admin") {
		t.Fatalf("the token once mcp:admin is required: %d %q", status, challenge)
	}
	s.rewrite(func(c *config.Config) { c.HTTP.OAuth.Scopes = []string{"mcp:tools"} })
	if line := n.hup(); line["msg"] != "configuration reloaded" {
		t.Fatalf("reload dropping mcp:admin: %v", line)
	}
	if status, _ := initialize(); status != http.StatusOK {
		t.Fatalf("the token once mcp:admin is no longer required: %d", status)
	}
	n.term()
}
