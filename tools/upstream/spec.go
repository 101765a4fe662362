package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// DetailType is the RFC 9396 authorization_details type of an upstream
// call: {"type": "mcp_tool_call", "server": ..., "tool": ..., "arguments": {...},
// "definition_sha256": ...}. definition_sha256 is the hash of the tool's
// pinned definition (see Pin), so the approver's key signs which
// definition it approved, and the call runs only under that one.
const DetailType = authzdetails.TypeMCPToolCall

// caller runs one tool upstream; approval, when set, is the call's
// approval token, sent in the request's _meta.
type caller func(ctx context.Context, tool string, args map[string]any, approval string) (*mcp.CallToolResult, error)

// Specs turns an upstream's tool list into catalog specs. It refuses a tool
// whose exposed name would not be a valid MCP tool name (a *NameError), a
// tool listed twice, and a tool whose input schema is not a JSON object
// schema; nothing an upstream sends makes it panic.
//
// Each spec runs under the definition as listed; a [Manager] with [Pins]
// offers only the tools whose listing matches their pin.
func Specs(u config.Upstream, list []*sdk.Tool, call caller) ([]*tools.Spec, error) {
	listed, err := describe(u, list)
	if err != nil {
		return nil, err
	}
	specs := make([]*tools.Spec, 0, len(listed))
	for _, l := range listed {
		sha := l.pin.SHA256
		specs = append(specs, spec(u.Name, l.pin.Tool, l.def, sha, call, func(string) string { return sha }))
	}
	return specs, nil
}

// listedTool is one tool of a listing: what agents would see, and its pin.
type listedTool struct {
	def mcp.Tool
	pin Pin
}

// describe checks an upstream's tool list and describes each tool.
func describe(u config.Upstream, list []*sdk.Tool) ([]listedTool, error) {
	out := make([]listedTool, 0, len(list))
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
		pin, err := PinOf(u, t)
		if err != nil {
			return nil, err
		}
		out = append(out, listedTool{def: def, pin: pin})
	}
	return out, nil
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

// spec is an offered tool whose pinned definition hashes to sha. pinned
// returns the hash a call of the tool may run under now ("" when none may
// run): Run refuses a call approved under another definition.
func spec(server, tool string, def mcp.Tool, sha string, call caller, pinned func(tool string) string) *tools.Spec {
	return &tools.Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			args = maps.Clone(args)
			if args == nil {
				args = map[string]any{}
			}
			details, err := json.Marshal([]map[string]any{{
				"type": DetailType, "server": server, "tool": tool, "arguments": args,
				"definition_sha256": sha,
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
			// Just before anything is sent: a call approved (or allowed)
			// under one definition never runs under another.
			if approved, now := approvedDefinition(c.Details), pinned(tool); approved == "" || approved != now {
				if now == "" {
					now = "none, the tool is held until an admin accepts its listing"
				}
				return nil, fmt.Errorf("tool %s of upstream %s changed since this call was approved "+
					"(definition_sha256 approved: %s, in force: %s); nothing was sent upstream", tool, server, orNone(approved), now)
			}
			res, err := call(ctx, tool, c.Args, c.Approval)
			if err != nil {
				return nil, err
			}
			return &tools.Result{MCP: res}, nil
		},
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// heldSpec is a tool held back because its listing differs from its pin:
// not offered, and every call of it refused. held asks again (the admin
// may have accepted the listing meanwhile, from another process).
func heldSpec(server string, def mcp.Tool, change Change, held func(ctx context.Context) error) *tools.Spec {
	refuse := func() error { return &HeldError{Server: server, Change: change} }
	return &tools.Spec{
		Def:  def,
		Held: held,
		Prepare: func(context.Context, map[string]any) (*tools.Call, error) {
			return nil, refuse()
		},
		Run: func(context.Context, *tools.Call) (*tools.Result, error) {
			return nil, refuse()
		},
	}
}
