package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkUpstreamCall measures what the gateway adds to a routine
// (read-only, low) call: the same go-sdk client calls read_note on the same
// upstream, directly and through Countersign, both over Streamable HTTP.
// Compare the two ns/op of one run:
//
//	go test -run XXX -bench UpstreamCall -benchtime 2000x ./cmd/countersign
func BenchmarkUpstreamCall(b *testing.B) {
	up := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{}))
	b.Cleanup(up.Close)
	_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "notes", Prefix: "notes__", URL: up.URL, ConnectTimeout: 10 * time.Second}}
		// One agent is the load on purpose: lift the per-agent rate cap.
		c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
	}))
	for _, tc := range []struct{ name, endpoint, tool string }{
		{"direct", up.URL, "read_note"},
		{"through-countersign", base + "/mcp", "notes__read_note"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cs := connect(b, &sdk.StreamableClientTransport{Endpoint: tc.endpoint, MaxRetries: -1}, protocolVersions[0], nil)
			params := &sdk.CallToolParams{Name: tc.tool, Arguments: map[string]any{"name": "plan"}}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				res, err := cs.CallTool(ctx, params)
				if err != nil || res.IsError {
					b.Fatalf("%v %+v", err, res)
				}
			}
		})
	}
}
