package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity/idptest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"
	"golang.org/x/oauth2/clientcredentials"
)

// readmeOAuthBlocks are the YAML blocks of the README's "Agents with OAuth":
// the worked setup first, then the providers' snippets.
func readmeOAuthBlocks(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Agents with OAuth\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for ok {
		var block string
		if _, section, ok = strings.Cut(section, "```yaml\n"); ok {
			block, section, ok = strings.Cut(section, "```")
			blocks = append(blocks, block)
		}
	}
	if len(blocks) < 5 {
		t.Fatalf("the README's Agents with OAuth has %d YAML blocks, want the setup and four providers", len(blocks))
	}
	return blocks
}

// withBlock is the test configuration with a README block laid over it, as
// a user adds it to their mcp.yaml.
func withBlock(t *testing.T, c *config.Config, block string) []byte {
	t.Helper()
	raw, err := config.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	var base, add map[string]any
	if err := yaml.Unmarshal(raw, &base); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(block), &add); err != nil {
		t.Fatalf("README block: %v\n%s", err, block)
	}
	overlay(base, add)
	out, err := yaml.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func overlay(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				overlay(d, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// The README's worked setup, run: the built binary serves with its http.oauth
// block pointed at a real provider; an agent gets a token by the client
// credentials grant for the listener's /mcp and calls a tool with the
// official go-sdk client; the audit export names the agent from the token and
// verifies. The providers' snippets are valid configuration.
func TestReadmeOAuthAgents(t *testing.T) {
	blocks := readmeOAuthBlocks(t)
	for i, snippet := range blocks[1:] {
		if _, err := config.Parse(withBlock(t, testConfig(t, nil), snippet), "README.md"); err != nil {
			t.Errorf("provider snippet %d: %v\n%s", i+1, err, snippet)
		}
	}

	p := idptest.New(t)
	p.AddClient("billing-agent", "billing-secret", nil, idptest.GrantClientCredentials)
	c := testConfig(t, nil)
	raw := withBlock(t, c, strings.ReplaceAll(blocks[0], "http://127.0.0.1:9000", p.Issuer()))
	path := filepath.Join(t.TempDir(), "mcp.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binPath, "serve", "--http", "127.0.0.1:0", "--config", path, "--log-format", "json")
	cmd.Dir = repoRoot
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	var endpoint string
	for deadline := time.Now().Add(60 * time.Second); endpoint == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("countersign did not start serving:\n%s", stderr.String())
		}
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "serving MCP over HTTP" {
				endpoint, _ = line["streamable"].(string)
			}
		}
	}

	// Without a token the client is refused; with one it calls tools.
	client := sdk.NewClient(&sdk.Implementation{Name: "oauth-agent", Version: "1"}, nil)
	if cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1}, nil); err == nil {
		cs.Close()
		t.Fatal("an agent without a token connected")
	}
	cc := clientcredentials.Config{ClientID: "billing-agent", ClientSecret: "billing-secret", TokenURL: p.TokenURL(),
		Scopes: []string{"mcp:tools"}, EndpointParams: url.Values{"resource": {endpoint}}}
	cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1, HTTPClient: cc.Client(context.Background())}, nil)
	if err != nil {
		t.Fatalf("connect with a client credentials token: %v\n%s", err, stderr.String())
	}
	if res := servertest.CallTool(t, cs, "get_balance", map[string]any{}); res.IsError {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
	cs.Close()

	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr.String())
	}
	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, c, "audit", "export", "--out", export, "--config", path)
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(runCLI(t, c, "audit", "pubkey", "--config", path)), 0o600)
	runCLI(t, c, "audit", "verify", export, "--key", keyFile)
	entries, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	var named bool
	for line := range strings.Lines(string(entries)) {
		var e struct{ Kind, Agent, Tool string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == string(vocab.KindCallExecuted) && e.Tool == "get_balance" {
			named = e.Agent == "billing-agent"
		}
	}
	if !named {
		t.Fatalf("the export does not name billing-agent as get_balance's caller:\n%s", entries)
	}
}
