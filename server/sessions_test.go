package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// rawMCP sends one JSON-RPC message as a client on version would.
func rawMCP(t *testing.T, method, url, version, token, session, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", version)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const (
	initBody    = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	balanceBody = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_balance","arguments":{}}}`
)

func TestSessionsAreIssuedBoundToTheirAgentAndEndForReal(t *testing.T) {
	s := newStack(t, func(c *config.Config) {
		withAgents(c)
		tr := c.Tools["transfer"]
		tr.Timeout = 30 * time.Second
		c.Tools["transfer"] = tr
	})
	url := s.serveHTTP(t) + "/mcp"
	alpha, beta := agentTokens["agent-a"], agentTokens["agent-b"]
	const v = "2025-11-25"

	made := "cs-" + "6b1f3c4d-1d7a-4a57-9a8e-2b1f3c4d5e6f"
	for _, id := range []string{made, "mcp-session-6b1f3c4d-1d7a-4a57-9a8e-2b1f3c4d5e6f"} {
		if resp, body := rawMCP(t, http.MethodPost, url, v, alpha, id, balanceBody); resp.StatusCode != http.StatusNotFound {
			t.Errorf("made-up session %s: %d %s, want 404", id, resp.StatusCode, body)
		}
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, v, alpha, made, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of a made-up session: %d, want 404", resp.StatusCode)
	}

	resp, body := rawMCP(t, http.MethodPost, url, v, alpha, "", initBody)
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(session, "cs-") {
		t.Fatalf("initialize: %d %q %s", resp.StatusCode, session, body)
	}
	rawMCP(t, http.MethodPost, url, v, alpha, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if resp, body := rawMCP(t, http.MethodPost, url, v, alpha, session, balanceBody); resp.StatusCode != http.StatusOK || !strings.Contains(body, "operating") {
		t.Fatalf("a call on the issued session: %d %s", resp.StatusCode, body)
	}
	if resp, _ := rawMCP(t, http.MethodPost, url, v, beta, session, balanceBody); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another agent's token on alpha's session: %d, want 404", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, v, beta, session, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another agent deleting alpha's session: %d, want 404", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, v, alpha, session, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE of alpha's own session: %d", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodPost, url, v, alpha, session, balanceBody); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a call on a deleted session: %d, want 404", resp.StatusCode)
	}

	// A real client's session: ending it (DELETE; the go-sdk client's own
	// Close waits for its calls first) cancels the call it left waiting
	// for a human.
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: url, MaxRetries: -1, HTTPClient: withToken(alpha)}, v)
	go cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(20000)})
	id := s.waitRequest(t)
	if resp, _ := rawMCP(t, http.MethodDelete, url, v, alpha, cs.ID(), ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE of the client's session: %d", resp.StatusCode)
	}
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "get_balance"}); err == nil {
		t.Error("the go-sdk client's deleted session still served a call")
	}
	s.waitState(t, id, "cancelled")
}

// Protocol 2026-07-28 has no sessions: a session id sent with it is not
// looked up, and a call carrying one is served.
func TestSessionHeaderMeansNothingUnder2026(t *testing.T) {
	s := newStack(t, withAgents)
	url := s.serveHTTP(t) + "/mcp"
	made := "cs-6b1f3c4d-1d7a-4a57-9a8e-2b1f3c4d5e6f"
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_balance","arguments":{},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},` +
		`"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}}}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(call))
	for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "get_balance",
		"Authorization": "Bearer " + agentTokens["agent-a"], "Mcp-Session-Id": made} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "operating") {
		t.Errorf("a 2026-07-28 call with a made-up session id: %d %s; the id should mean nothing", resp.StatusCode, body)
	}
}

// connTracker lets a test cut a client's connections as a crash would.
type connTracker struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (c *connTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

func (c *connTracker) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in 30s", what)
		}
	}
}

// A waiting call whose client goes away becomes cancelled and never runs.
// SSE does not cancel handlers on disconnect; the session hook must.
func TestDisconnectCancelsTheWaitingRequest(t *testing.T) {
	for _, name := range []string{"sse", "streamable"} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, nil)
			base := s.serveHTTP(t)
			conns := &connTracker{}
			hc := &http.Client{Transport: &http.Transport{DialContext: conns.dial}}
			var transport sdk.Transport = &sdk.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: hc}
			if name == "streamable" {
				transport = &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1, HTTPClient: hc}
			}
			cs := connect(t, transport, protocolVersions[1])
			go cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(50000)})
			id := s.waitRequest(t)
			conns.closeAll() // the client vanishes without a word
			s.waitState(t, id, "cancelled")
			waitFor(t, "approval.cancelled recorded", func() bool { return len(s.entries(t, vocab.KindApprovalCancelled)) == 1 })
			for _, e := range s.entries(t, vocab.KindCallExecuted) {
				if e.Tool == "transfer" {
					t.Error("a cancelled request ran")
				}
			}
		})
	}
}

func TestClientCancellationCancelsTheWaitingRequest(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) {
			s := newStack(t, nil)
			cs := connect(t, &sdk.StreamableClientTransport{Endpoint: s.serveHTTP(t) + "/mcp", MaxRetries: -1}, version)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(50000)})
				done <- err
			}()
			id := s.waitRequest(t)
			cancel()
			<-done
			s.waitState(t, id, "cancelled")
		})
	}
}
