package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// send makes one request with the given Host and Authorization (either
// may be empty) and returns its status and body.
func send(t *testing.T, method, url, host, auth string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStreamableHTTPAndSSEOnBothVersions(t *testing.T) {
	s := newStack(t, nil)
	base := s.serveHTTP(t)
	transports := map[string]func() sdk.Transport{
		"streamable": func() sdk.Transport { return &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1} },
		"sse":        func() sdk.Transport { return &sdk.SSEClientTransport{Endpoint: base + "/sse"} },
	}
	for name, transport := range transports {
		for _, version := range protocolVersions {
			t.Run(name+"/"+version, func(t *testing.T) {
				checkServes(t, connect(t, transport(), version))
			})
		}
	}
	// With no agents configured every caller is anonymous.
	for _, e := range s.entries(t, vocab.KindCallExecuted) {
		if e.Agent != "anonymous" {
			t.Errorf("an unauthenticated call was recorded as agent %q, want anonymous", e.Agent)
		}
	}
}

func TestBearerTokenAuthenticatesTheAgent(t *testing.T) {
	s := newStack(t, withAgents)
	base := s.serveHTTP(t)

	for _, path := range []string{"/mcp", "/sse", "/message"} {
		method := http.MethodPost
		if path == "/sse" {
			method = http.MethodGet
		}
		for _, auth := range []string{"", "Bearer wrong", "Bearer ", "Basic " + agentTokens["agent-a"], agentTokens["agent-a"]} {
			req, _ := http.NewRequest(method, base+path, strings.NewReader(`{}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with Authorization %q: %d %q, want 401 with a Bearer challenge",
					method, path, auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	for _, e := range s.entries(t, "") {
		if e.Tool != "" || e.Agent != "" {
			t.Errorf("an unauthenticated request reached the guard: %+v", e)
		}
	}

	// The routes beside MCP authenticate their own clients.
	if code, body := send(t, http.MethodGet, base+"/route", "", "", nil); code != http.StatusOK || body != "route reached" {
		t.Errorf("a route without a bearer token: %d %q", code, body)
	}

	// The right token: the agent it names is who the guard and the audit
	// log see, on both transports and both versions.
	transports := map[string]func(token string) sdk.Transport{
		"streamable": func(token string) sdk.Transport {
			return &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1, HTTPClient: withToken(token)}
		},
		"sse": func(token string) sdk.Transport {
			return &sdk.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: withToken(token)}
		},
	}
	for name, transport := range transports {
		for _, version := range protocolVersions {
			for _, agent := range []string{"agent-a", "agent-b"} {
				t.Run(name+"/"+version+"/"+agent, func(t *testing.T) {
					cs := connect(t, transport(agentTokens[agent]), version)
					if res := servertest.CallTool(t, cs, "get_balance", map[string]any{}); res.IsError {
						t.Fatalf("get_balance: %s", servertest.ResultText(res))
					}
					es := s.entries(t, vocab.KindCallExecuted)
					if len(es) == 0 || es[len(es)-1].Agent != agent || es[len(es)-1].Tool != "get_balance" {
						t.Errorf("the audit log does not name %s as the caller: %+v", agent, es)
					}
				})
			}
		}
	}
}

func TestHostHeaderIsCheckedBeforeAnythingElse(t *testing.T) {
	s := newStack(t, withAgents) // allowed_hosts: [localhost, 127.0.0.1, "[::1]"]
	base := s.serveHTTP(t)
	token := "Bearer " + agentTokens["agent-a"]

	// A page on another origin that rebinds its name to 127.0.0.1 sends
	// its own name as Host: refused, whatever it asks and with any token.
	for _, host := range []string{"evil.example", "evil.example:8711", "localhost.evil.example", "127.0.0.1.nip.io"} {
		for _, path := range []string{"/mcp", "/sse", "/message", "/route"} {
			for _, auth := range []string{"", token} {
				if code, _ := send(t, http.MethodPost, base+path, host, auth, strings.NewReader(`{}`)); code != http.StatusForbidden {
					t.Errorf("Host %s on %s (auth %v): %d, want 403", host, path, auth != "", code)
				}
			}
		}
	}
	// The configured names pass, on any port and in any case; bearer
	// authentication comes next.
	for _, host := range []string{"localhost", "LocalHost:8711", "127.0.0.1:1", "[::1]:8711", "[::1]"} {
		if code, _ := send(t, http.MethodPost, base+"/mcp", host, "", strings.NewReader(`{}`)); code != http.StatusUnauthorized {
			t.Errorf("Host %s without a token: %d, want 401 (past the Host check)", host, code)
		}
		if code, body := send(t, http.MethodGet, base+"/route", host, "", nil); code != http.StatusOK {
			t.Errorf("Host %s on a route: %d %s", host, code, body)
		}
	}
	// A real client reaching the listener by an allowed name is served.
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: strings.Replace(base, "127.0.0.1", "localhost", 1) + "/mcp",
		MaxRetries: -1, HTTPClient: withToken(agentTokens["agent-a"])}, protocolVersions[0])
	checkServes(t, cs)
}

func TestNoAllowedHostsChecksNoHost(t *testing.T) {
	s := newStack(t, func(c *config.Config) { c.HTTP.AllowedHosts = nil })
	base := s.serveHTTP(t)
	if code, body := send(t, http.MethodGet, base+"/route", "anything.example", "", nil); code != http.StatusOK {
		t.Errorf("Host check with no allowed_hosts: %d %s", code, body)
	}
}

// unsized hides a body's length, so it is sent chunked.
type unsized struct{ io.Reader }

func TestOversizedBodyIs413AndMalformedJSONIsAJSONRPCError(t *testing.T) {
	s := newStack(t, func(c *config.Config) { c.HTTP.MaxBodyBytes = 4096 })
	base := s.serveHTTP(t)

	ping := func(pad int) string {
		return `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"pad":"` + strings.Repeat("x", pad) + `"}}}`
	}
	big := ping(8192)
	for _, path := range []string{"/mcp", "/message", "/route"} {
		if code, _ := send(t, http.MethodPost, base+path, "", "", strings.NewReader(big)); code != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized body on %s: %d, want 413", path, code)
		}
		// Without a Content-Length the limit holds as the body is read.
		if code, _ := send(t, http.MethodPost, base+path, "", "", unsized{strings.NewReader(big)}); code != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized chunked body on %s: %d, want 413", path, code)
		}
	}
	// Exactly at the limit is not too large.
	exact := ping(4096 - len(ping(0)))
	if len(exact) != 4096 {
		t.Fatalf("test body is %d bytes", len(exact))
	}
	if code, body := send(t, http.MethodPost, base+"/route", "", "", unsized{strings.NewReader(exact)}); code != http.StatusOK {
		t.Errorf("a body of exactly max_body_bytes: %d %s", code, body)
	}

	if _, body := send(t, http.MethodPost, base+"/mcp", "", "", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":`)); !strings.Contains(body, "-32700") {
		t.Errorf("malformed JSON: %s, want a JSON-RPC parse error (-32700)", body)
	}
	// The server is still serving.
	checkServes(t, connect(t, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0]))
}
