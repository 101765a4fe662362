package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// rawMCP posts one JSON-RPC message as a 2025-11-25 client would.
func rawMCP(t *testing.T, method, url, token, session, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
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

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
const balanceBody = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_balance","arguments":{}}}`

func TestSessionsAreIssuedBoundToTheirAgentAndEndForReal(t *testing.T) {
	tokens := map[string]string{"alpha": "alpha-token-0123456789", "beta": "beta-token-0123456789"}
	s, base := startHTTP(t, testConfig(t, func(c *config.Config) {
		tr := c.Tools["transfer"]
		tr.Timeout = 30 * time.Second
		c.Tools["transfer"] = tr
		for id, tok := range tokens {
			sum := sha256.Sum256([]byte(tok))
			c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: id, TokenSHA256: hex.EncodeToString(sum[:])})
		}
	}))
	url := base + "/mcp"

	made := "cs-" + "6b1f3c4d-1d7a-4a57-9a8e-2b1f3c4d5e6f"
	for _, id := range []string{made, "mcp-session-6b1f3c4d-1d7a-4a57-9a8e-2b1f3c4d5e6f"} {
		if resp, body := rawMCP(t, http.MethodPost, url, tokens["alpha"], id, balanceBody); resp.StatusCode != http.StatusNotFound {
			t.Errorf("made-up session %s: %d %s, want 404", id, resp.StatusCode, body)
		}
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, tokens["alpha"], made, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of a made-up session: %d, want 404", resp.StatusCode)
	}

	resp, body := rawMCP(t, http.MethodPost, url, tokens["alpha"], "", initBody)
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(session, "cs-") {
		t.Fatalf("initialize: %d %q %s", resp.StatusCode, session, body)
	}
	rawMCP(t, http.MethodPost, url, tokens["alpha"], session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if resp, body := rawMCP(t, http.MethodPost, url, tokens["alpha"], session, balanceBody); resp.StatusCode != http.StatusOK || !strings.Contains(body, "operating") {
		t.Fatalf("a call on the issued session: %d %s", resp.StatusCode, body)
	}
	if resp, _ := rawMCP(t, http.MethodPost, url, tokens["beta"], session, balanceBody); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another agent's token on alpha's session: %d, want 404", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, tokens["beta"], session, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another agent deleting alpha's session: %d, want 404", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, tokens["alpha"], session, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE of alpha's own session: %d", resp.StatusCode)
	}
	if resp, _ := rawMCP(t, http.MethodPost, url, tokens["alpha"], session, balanceBody); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a call on a deleted session: %d, want 404", resp.StatusCode)
	}

	// A real client's session: ending it (DELETE; the go-sdk client's own
	// Close waits for its calls first) cancels the call it left waiting
	// for a human.
	hc := &http.Client{Transport: bearer{tokens["alpha"], http.DefaultTransport}}
	cs := connect(t, &sdk.StreamableClientTransport{Endpoint: url, MaxRetries: -1, HTTPClient: hc}, protocolVersions[1], nil)
	go cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(20000)})
	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		for _, e := range entries(t, s, "approval.requested") {
			id = e.RequestID
		}
		time.Sleep(20 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("the transfer raised no request")
	}
	if resp, _ := rawMCP(t, http.MethodDelete, url, tokens["alpha"], cs.ID(), ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE of the client's session: %d", resp.StatusCode)
	}
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "get_balance"}); err == nil {
		t.Error("the go-sdk client's deleted session still served a call")
	}
	for {
		r, err := s.approvals.Get(context.Background(), id)
		if err == nil && r.State == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request after the session ended: %+v %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
