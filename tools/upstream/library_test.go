package upstream_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// The reference filesystem server lists its tools' input schemas with a
// "$schema" keyword. The gateway offers each schema as the upstream listed
// it, and pins it so: a keyword lost on the way would change what agents
// see and every pin's hash.
//
// Its second half is why tools/upstream keeps the official go-sdk client
// (see the package comment): mcp-go's client decodes each listed schema
// into its ToolInputSchema, which keeps type, properties, required, $defs
// and additionalProperties and drops every other keyword. If that half
// fails, mcp-go's client keeps schemas whole now, and porting
// tools/upstream to it should be tried again.
func TestUpstreamSchemasReachAgentsWhole(t *testing.T) {
	server, err := upstreamtest.FilesystemServer()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	const tool = "read_text_file"

	t.Run("through the gateway", func(t *testing.T) {
		_, cat := start(t, config.Upstream{Name: "files", Prefix: "files__", Command: []string{server, root},
			ConnectTimeout: 60 * time.Second, Required: true})
		spec, ok := cat.Lookup("files__" + tool)
		if !ok {
			t.Fatalf("files__%s not offered", tool)
		}
		if !strings.Contains(string(spec.Def.RawInputSchema), `"$schema"`) {
			t.Errorf("the offered input schema lost $schema: %s", spec.Def.RawInputSchema)
		}
	})

	t.Run("mcp-go's client drops the keyword", func(t *testing.T) {
		c := connectMCPGo(t, transport.NewStdio(server, nil, root))
		list, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range list.Tools {
			if l.Name != tool {
				continue
			}
			raw, err := json.Marshal(l.InputSchema)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(raw), `"$schema"`) {
				t.Fatalf("mcp-go's client now keeps $schema (%s): try porting tools/upstream to it", raw)
			}
			t.Logf("mcp-go's client lists %s with input schema %s", tool, raw)
			return
		}
		t.Fatalf("mcp-go's client did not list %s", tool)
	})
}

// A go-sdk server over Streamable HTTP is stateful unless told otherwise,
// and answers server/discover listing only protocol versions before
// 2026-07-28. The gateway's go-sdk client then falls back to the
// initialize handshake and works (TestHTTPUpstreamWithHeadersFromTheEnvironment).
// mcp-go's client takes the answer as a stateless connection at 2026-07-28,
// which the server refuses on every later request: it cannot list the
// tools. The second reason tools/upstream keeps the go-sdk client; if
// this test fails, mcp-go's client falls back now.
func TestMCPGoClientCannotListAStatefulGoSDKServer(t *testing.T) {
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{}))
	t.Cleanup(srv.Close)
	tr, err := transport.NewStreamableHTTP(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := connectMCPGo(t, tr)
	_, err = c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err == nil {
		t.Fatalf("mcp-go's client lists a stateful go-sdk server now (protocol %s): try porting tools/upstream to it", c.ProtocolVersion())
	}
	if !strings.Contains(err.Error(), "unsupported protocol version") {
		t.Fatalf("tools/list failed otherwise than expected: %v", err)
	}
	t.Logf("mcp-go's client at protocol %s: tools/list: %v", c.ProtocolVersion(), err)
}

// connectMCPGo starts and initializes an mcp-go client over tr, closed
// when the test ends.
func connectMCPGo(tb testing.TB, tr transport.Interface, opts ...client.ClientOption) *client.Client {
	tb.Helper()
	c := client.NewClient(tr, opts...)
	tb.Cleanup(func() { c.Close() })
	// A stdio transport's process lives as long as Start's context.
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "countersign-test", Version: "0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		tb.Fatalf("initialize: %v", err)
	}
	return c
}
