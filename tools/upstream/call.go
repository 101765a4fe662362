package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// call runs one tool upstream, forwarding progress and cancellation.
func (c *conn) call(ctx context.Context, tool string, args map[string]any, approval string) (*mcp.CallToolResult, error) {
	session, err := c.begin()
	if err != nil {
		return nil, err
	}
	defer c.end()
	// However long the agent waits, an upstream that never answers is
	// waited for no longer than this.
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.CallTimeout, errCallTimeout)
	defer cancel()
	params := &sdk.CallToolParams{Name: tool, Arguments: args}
	if p := tools.ProgressFrom(ctx); p != nil {
		token := uuid.NewString()
		c.progress.Store(token, p)
		// A notification sent just before the result can be handled just
		// after it: keep the token a moment longer.
		defer time.AfterFunc(time.Second, func() { c.progress.Delete(token) })
		params.Meta = sdk.Meta{"progressToken": token}
	}
	// An upstream that wants to can check, against Countersign's published
	// keys, that humans approved exactly these arguments.
	if approval != "" {
		if params.Meta == nil {
			params.Meta = sdk.Meta{}
		}
		params.Meta[token.MCPMetaKey] = approval
	}
	res, err := session.CallTool(ctx, params)
	if err != nil {
		return nil, c.callError(ctx, err)
	}
	return convertResult(res)
}

// callError says what a failed tools/call tells about the upstream's
// action. A JSON-RPC error the upstream sent is its answer: the tool ran,
// or refused, and failed. Anything else (the connection lost, the call
// cancelled upstream after it was sent, no answer within call_timeout)
// leaves the outcome unknown: the upstream may have acted. That includes
// the go-sdk's "rejected by transport", which its Streamable HTTP client
// also reports when the POST was delivered and its response was cut off.
// Only a call made while no session is up is known not to have left.
func (c *conn) callError(ctx context.Context, err error) error {
	err = fmt.Errorf("upstream %s: %w", c.cfg.Name, err)
	if context.Cause(ctx) == errCallTimeout {
		err = fmt.Errorf("%w (no answer within call_timeout %s)", err, c.cfg.CallTimeout)
	}
	var wire *jsonrpc.Error
	if errors.As(err, &wire) {
		switch wire.Code {
		case codeServerClosing, codeClientClosing, codeRejected:
			// Made up on our side: the upstream never answered.
		default:
			return err
		}
	}
	return &tools.UnknownOutcomeError{Err: err}
}

// errCallTimeout is why a call's context ends after call_timeout.
var errCallTimeout = errors.New("no answer within call_timeout")

// JSON-RPC error codes the go-sdk client makes up itself, never sent by an
// upstream: calls cut off by the connection closing, and a transport
// failure around the request.
const (
	codeClientClosing = -32003
	codeServerClosing = -32004
	codeRejected      = -32005
)

// convertResult carries the upstream's result over to the server library's
// type through its JSON form, so that nothing of it (content of any kind,
// structuredContent, isError, _meta) is lost or reinterpreted.
func convertResult(res *sdk.CallToolResult) (*mcp.CallToolResult, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("upstream result: %w", err)
	}
	msg := json.RawMessage(raw)
	out, err := mcp.ParseCallToolResult(&msg)
	if err != nil {
		return nil, fmt.Errorf("upstream result: %w", err)
	}
	return out, nil
}
