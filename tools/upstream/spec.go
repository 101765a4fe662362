package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// DetailType is the RFC 9396 authorization_details type of an upstream
// call: {"type": "mcp_tool_call", "server": ..., "tool": ..., "arguments": {...}}.
const DetailType = "mcp_tool_call"

// caller runs one tool upstream; approval, when set, is the call's
// approval token, sent in the request's _meta.
type caller func(ctx context.Context, tool string, args map[string]any, approval string) (*mcp.CallToolResult, error)

// Specs turns an upstream's tool list into catalog specs. It refuses a tool
// whose exposed name would not be a valid MCP tool name (a *NameError), a
// tool listed twice, and a tool whose input schema is not a JSON object
// schema; nothing an upstream sends makes it panic.
func Specs(u config.Upstream, list []*sdk.Tool, call caller) ([]*tools.Spec, error) {
	specs := make([]*tools.Spec, 0, len(list))
	seen := map[string]bool{}
	for _, t := range list {
		if t == nil {
			return nil, fmt.Errorf("upstream %s: empty entry in its tool list", u.Name)
		}
		exposed := u.ExposedName(t.Name)
		if !NamePattern.MatchString(exposed) || t.Name == "" {
			return nil, &NameError{Upstream: u.Name, Tool: t.Name, Exposed: exposed}
		}
		if seen[exposed] {
			return nil, fmt.Errorf("upstream %s: tool %q is listed twice", u.Name, t.Name)
		}
		seen[exposed] = true
		def, err := definition(exposed, t)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tool %q: %w", u.Name, t.Name, err)
		}
		specs = append(specs, spec(u.Name, t.Name, def, call))
	}
	return specs, nil
}

// definition is the tool as Countersign's agents see it: the upstream's own
// title, description, schemas and annotations under the exposed name.
func definition(exposed string, t *sdk.Tool) (mcp.Tool, error) {
	in, err := objectSchema(t.InputSchema)
	if err != nil {
		return mcp.Tool{}, fmt.Errorf("input schema: %w", err)
	}
	var out json.RawMessage
	if t.OutputSchema != nil {
		if out, err = objectSchema(t.OutputSchema); err != nil {
			return mcp.Tool{}, fmt.Errorf("output schema: %w", err)
		}
	}
	// The rest (title, description, annotations, icons, _meta) carries
	// over through its JSON form; the schemas go over as raw bytes, so
	// that no keyword the server library does not model is lost.
	rest := *t
	rest.InputSchema, rest.OutputSchema = nil, nil
	raw, err := json.Marshal(&rest)
	if err != nil {
		return mcp.Tool{}, err
	}
	var def mcp.Tool
	if err := json.Unmarshal(raw, &def); err != nil {
		return mcp.Tool{}, err
	}
	def.Name = exposed
	def.InputSchema, def.OutputSchema = mcp.ToolInputSchema{}, mcp.ToolOutputSchema{}
	def.RawInputSchema, def.RawOutputSchema = in, out
	return def, nil
}

// objectSchema checks that a schema is a JSON object with type "object", as
// MCP requires of tool schemas, and returns its bytes.
func objectSchema(s any) (json.RawMessage, error) {
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	var typ string
	if err := json.Unmarshal(top["type"], &typ); err != nil || typ != "object" {
		return nil, fmt.Errorf(`expected "type": "object"`)
	}
	return raw, nil
}

func spec(server, tool string, def mcp.Tool, call caller) *tools.Spec {
	return &tools.Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			args = maps.Clone(args)
			if args == nil {
				args = map[string]any{}
			}
			details, err := json.Marshal([]map[string]any{{
				"type": DetailType, "server": server, "tool": tool, "arguments": args,
			}})
			if err != nil {
				return nil, &tools.ArgError{Field: "arguments", Msg: "cannot be encoded: " + err.Error()}
			}
			return &tools.Call{
				Args: args, Details: details,
				Summary: fmt.Sprintf("Call %s on upstream %s", tool, server),
			}, nil
		},
		Run: func(ctx context.Context, c *tools.Call) (*tools.Result, error) {
			res, err := call(ctx, tool, c.Args, c.Approval)
			if err != nil {
				return nil, err
			}
			return &tools.Result{MCP: res}, nil
		},
	}
}
