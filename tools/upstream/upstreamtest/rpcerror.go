package upstreamtest

import (
	"context"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxRPCErrorSize bounds rpc_error's filler.
const maxRPCErrorSize = 8 << 20

// ErrorSecret is the secret-looking text rpc_error ends its message with
// when asked to: something the upstream says that the caller never sent.
const ErrorSecret = "api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc"

type rpcErrorArgs struct {
	Size   int  `json:"size" jsonschema:"bytes of filler"`
	Secret bool `json:"secret,omitempty" jsonschema:"end the message with ErrorSecret"`
}

// addRPCError adds the rpc_error tool.
func (s *server) addRPCError() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "rpc_error",
		Description: "Answer with a JSON-RPC error whose message is size bytes of filler, then a secret if asked.",
		InputSchema: objectSchema[rpcErrorArgs](func(p map[string]*jsonschema.Schema) {
			p["size"].Minimum, p["size"].Maximum = ptr(0.0), ptr(float64(maxRPCErrorSize))
		}),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.rpcError)
}

// rpcError answers with a JSON-RPC error: the go-sdk passes a
// *jsonrpc.Error through as the response's error, where any other error
// would become a tool result with isError.
func (s *server) rpcError(_ context.Context, req *mcp.CallToolRequest, in rpcErrorArgs) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	msg := strings.Repeat("upstream error ", in.Size/15+1)[:in.Size]
	if in.Secret {
		msg += " " + ErrorSecret
	}
	return nil, nil, &jsonrpc.Error{Code: -32000, Message: msg}
}
