package upstreamtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rpc_error, offered on request, answers with a JSON-RPC error, not a tool
// result, holding exactly the message asked for.
func TestRPCError(t *testing.T) {
	p := connect(t, "stdio", upstreamtest.EnvRPCError+"=1")
	if p.tools(t)["rpc_error"] == nil {
		t.Fatal("rpc_error not offered with " + upstreamtest.EnvRPCError + "=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := p.cs.CallTool(ctx, &mcp.CallToolParams{Name: "rpc_error", Arguments: map[string]any{"size": 100000, "secret": true}})
	var wire *jsonrpc.Error
	if !errors.As(err, &wire) || wire.Code != -32000 {
		t.Fatalf("rpc_error: %v, want a JSON-RPC error -32000", err)
	}
	if len(wire.Message) != 100000+1+len(upstreamtest.ErrorSecret) || !strings.HasSuffix(wire.Message, " "+upstreamtest.ErrorSecret) {
		t.Fatalf("message of %d bytes ending %q", len(wire.Message), wire.Message[max(0, len(wire.Message)-10):])
	}
	if connect(t, "http").tools(t)["rpc_error"] != nil {
		t.Fatal("rpc_error offered without being asked for")
	}
}
