package upstream_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkUpstreamCall is one routine upstream call (read_note on the Go
// test upstream) through each client library, over Streamable HTTP and
// over stdio: the gateway's own (the go-sdk client, its result converted
// to mcp-go's type), the go-sdk client alone (without the conversion), and
// mcp-go's client (what a port to it would do). See the package comment.
// Over Streamable HTTP the test upstream runs in this process, so its
// allocations count too, the same for each library.
func BenchmarkUpstreamCall(b *testing.B) {
	ctx := context.Background()
	args := map[string]any{"name": "x"}
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{}))
	defer srv.Close()
	stdioEnv := upstreamtest.EnvMode + "=stdio"

	for _, tc := range []struct {
		name  string
		up    config.Upstream
		sdk   func() sdk.Transport
		mcpgo func() (transport.Interface, error)
		opts  []client.ClientOption
	}{
		{
			name: "streamable",
			up:   config.Upstream{Name: "web", Prefix: "web__", URL: srv.URL},
			sdk:  func() sdk.Transport { return &sdk.StreamableClientTransport{Endpoint: srv.URL} },
			mcpgo: func() (transport.Interface, error) {
				return transport.NewStreamableHTTP(srv.URL)
			},
			// At the protocol the go-sdk client settles on with the test
			// upstream: mcp-go's client cannot fall back to it by itself
			// (TestMCPGoClientCannotListAStatefulGoSDKServer).
			opts: []client.ClientOption{client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION)},
		},
		{
			name: "stdio",
			up: config.Upstream{Name: "notes", Prefix: "notes__", Command: []string{os.Args[0]},
				Env: map[string]string{upstreamtest.EnvMode: "stdio"}},
			sdk: func() sdk.Transport {
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), stdioEnv)
				return &sdk.CommandTransport{Command: cmd}
			},
			mcpgo: func() (transport.Interface, error) {
				return transport.NewStdio(os.Args[0], []string{stdioEnv}), nil
			},
		},
	} {
		b.Run(tc.name+"/gateway-go-sdk", func(b *testing.B) {
			tc.up.ConnectTimeout, tc.up.CallTimeout = 20*time.Second, time.Minute
			_, cat := start(b, tc.up)
			spec, _ := cat.Lookup(tc.up.Prefix + "read_note")
			call, err := spec.Prepare(ctx, args)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := spec.Run(ctx, call); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/go-sdk-unconverted", func(b *testing.B) {
			session, err := sdk.NewClient(&sdk.Implementation{Name: "countersign", Version: "bench"}, nil).Connect(ctx, tc.sdk(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer session.Close()
			b.Logf("go-sdk at protocol %s", session.InitializeResult().ProtocolVersion)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := session.CallTool(ctx, &sdk.CallToolParams{Name: "read_note", Arguments: args}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/mcp-go", func(b *testing.B) {
			tr, err := tc.mcpgo()
			if err != nil {
				b.Fatal(err)
			}
			c := connectMCPGo(b, tr, tc.opts...)
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
