package upstream

import (
	"context"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkUpstreamCall is one routine upstream call (read_note on the Go
// test upstream) through each client library, over Streamable HTTP and
// over stdio: the gateway's own call (go-sdk, its result converted to
// mcp-go's type), the go-sdk call alone (what the conversion costs), and
// mcp-go's client (what a port to it would do). See the package comment.
func BenchmarkUpstreamCall(b *testing.B) {
	ctx := context.Background()
	args := map[string]any{"name": "x"}
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{}))
	defer srv.Close()
	web := config.Upstream{Name: "web", Prefix: "web__", URL: srv.URL}
	stdio := config.Upstream{Name: "notes", Prefix: "notes__", Command: []string{os.Args[0]},
		Env: map[string]string{upstreamtest.EnvMode: "stdio"}}

	for _, tc := range []struct {
		name  string
		up    config.Upstream
		mcpgo func() (transport.Interface, error)
		opts  []client.ClientOption
	}{
		// At the protocol the go-sdk client settles on with the test
		// upstream: over Streamable HTTP mcp-go's client cannot fall back
		// to it by itself (TestMCPGoClientCannotListAStatefulGoSDKServer).
		{"streamable", web, func() (transport.Interface, error) { return transport.NewStreamableHTTP(srv.URL) },
			[]client.ClientOption{client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION)}},
		{"stdio", stdio, func() (transport.Interface, error) {
			return transport.NewStdio(os.Args[0], []string{upstreamtest.EnvMode + "=stdio"}), nil
		}, nil},
	} {
		b.Run(tc.name+"/gateway-go-sdk", func(b *testing.B) {
			c := benchConn(b, tc.up)
			b.Logf("go-sdk at protocol %s", c.session.InitializeResult().ProtocolVersion)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.call(ctx, "read_note", args, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/go-sdk-unconverted", func(b *testing.B) {
			c := benchConn(b, tc.up)
			c.mu.Lock()
			session := c.session
			c.mu.Unlock()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := session.CallTool(ctx, &sdk.CallToolParams{Name: "read_note", Arguments: args}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/mcp-go", func(b *testing.B) {
			t, err := tc.mcpgo()
			if err != nil {
				b.Fatal(err)
			}
			c := client.NewClient(t, tc.opts...)
			defer c.Close()
			if err := c.Start(ctx); err != nil {
				b.Fatal(err)
			}
			init := mcp.InitializeRequest{}
			init.Params.ClientInfo = mcp.Implementation{Name: "countersign", Version: "bench"}
			if _, err := c.Initialize(ctx, init); err != nil {
				b.Fatal(err)
			}
			b.Logf("mcp-go at protocol %s", c.ProtocolVersion())
			req := mcp.CallToolRequest{}
			req.Params.Name, req.Params.Arguments = "read_note", args
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.CallTool(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchConn starts a manager with one upstream and returns its connection.
func benchConn(b *testing.B, u config.Upstream) *conn {
	b.Helper()
	u.ConnectTimeout, u.CallTimeout = 20*time.Second, time.Minute
	m, err := Start(context.Background(), []config.Upstream{u}, tools.NewCatalog(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m.conns[0]
}
