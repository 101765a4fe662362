package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/countersign/countersign/config"
	"github.com/gowebpki/jcs"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Pinning. An upstream's tools are trusted as they were when an admin
// first let Countersign connect to it: on the first connection (no pins
// yet) each tool's definition is pinned as listed. Afterwards every listing
// is compared with the pins; a tool whose definition differs, and a tool
// that is new (a renamed tool is a removed one plus a new one), is held:
// not offered to agents, and its calls refused, until an admin accepts the
// listing (countersign upstreams accept). Tools that did not change go on.
//
// The pinned definition is the JSON object of these members of the tool as
// the upstream listed it, and nothing else: name (the upstream's own),
// title, description, inputSchema, outputSchema and annotations (the MCP
// annotation fields: title, readOnlyHint, destructiveHint, idempotentHint,
// openWorldHint). Icons and _meta are not pinned: they change neither
// what a call does nor how the policy judges it. Its hash is the hex
// SHA-256 of its RFC 8785 (JCS) form, which is also what is stored.

// Pin is a tool's definition as pinned, or as listed now.
type Pin struct {
	Tool       string          // the upstream's own name of the tool
	Exposed    string          // the name agents see (prefix + Tool)
	SHA256     string          // hex SHA-256 of Definition
	Definition json.RawMessage // the pinned members, in JCS form
}

// Change is a difference between an upstream's pins and its listing.
type Change struct {
	Tool    string // the upstream's own name
	Exposed string
	Pinned  string // hash of the pin; "" for a new tool
	Listed  string // hash of the listing; "" for a removed tool
	// Definition is the tool as listed now; nil when it was removed.
	Definition json.RawMessage
	// What names what changed: "new", "removed", or the parts that differ
	// ("schema", "annotations", "description").
	What []string
	// Policy, for a removed tool, is the tools: key of its policy, which
	// now names no tool; "" when it had none.
	Policy string
}

// Pins keeps upstream tools' pins, and records in the audit log what
// happens to them. Countersign's implementation is package pinstore.
type Pins interface {
	// Pinned returns server's pins by the upstream's tool name; none
	// before its first connection.
	Pinned(ctx context.Context, server string) (map[string]Pin, error)
	// PinFirst pins every tool server lists on its first connection
	// (tool.pinned each).
	PinFirst(ctx context.Context, server string, listed []Pin) error
	// Changed records the changes (tool.changed each) not recorded before,
	// so that a listing repeated on every re-list or reconnect is
	// recorded once.
	Changed(ctx context.Context, server string, changes []Change) error
}

// HeldError refuses a call of a held tool.
type HeldError struct {
	Server string
	Change Change
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s: an admin must run `countersign upstreams accept %s %s`",
		e.Change.Describe(e.Server), e.Server, e.Change.Tool)
}

// Describe says in words how a tool's listing differs from its pin.
func (c Change) Describe(server string) string {
	switch {
	case c.Pinned == "":
		return fmt.Sprintf("tool %s of upstream %s is new since its tools were pinned", c.Tool, server)
	case c.Listed == "" && c.Policy != "":
		return fmt.Sprintf("tool %s of upstream %s is no longer listed; the policy %s now names no tool", c.Tool, server, c.Policy)
	case c.Listed == "":
		return fmt.Sprintf("tool %s of upstream %s is no longer listed", c.Tool, server)
	}
	return fmt.Sprintf("tool %s of upstream %s changed since it was pinned (%s)", c.Tool, server, strings.Join(c.What, ", "))
}

// pinnedDefinition is the part of a listed tool that is pinned.
type pinnedDefinition struct {
	Name         string               `json:"name"`
	Title        string               `json:"title,omitempty"`
	Description  string               `json:"description,omitempty"`
	InputSchema  any                  `json:"inputSchema"`
	OutputSchema any                  `json:"outputSchema,omitempty"`
	Annotations  *sdk.ToolAnnotations `json:"annotations,omitempty"`
}

// PinOf returns the pin of a listed tool.
func PinOf(u config.Upstream, t *sdk.Tool) (Pin, error) {
	raw, err := json.Marshal(pinnedDefinition{
		Name: t.Name, Title: t.Title, Description: t.Description,
		InputSchema: t.InputSchema, OutputSchema: t.OutputSchema, Annotations: t.Annotations,
	})
	if err != nil {
		return Pin{}, fmt.Errorf("upstream %s: tool %q: definition: %w", u.Name, t.Name, err)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return Pin{}, fmt.Errorf("upstream %s: tool %q: definition: %w", u.Name, t.Name, err)
	}
	sum := sha256.Sum256(canon)
	return Pin{Tool: t.Name, Exposed: u.ExposedName(t.Name), SHA256: hex.EncodeToString(sum[:]), Definition: canon}, nil
}

// Compare returns the differences between an upstream's pins and its
// listing, in the order of the listing, then the removed tools by name.
// policy reports whether a policy under tools: names an exposed tool.
func Compare(pins map[string]Pin, listed []Pin, policy func(exposed string) bool) []Change {
	var out []Change
	seen := map[string]bool{}
	for _, l := range listed {
		seen[l.Tool] = true
		p, ok := pins[l.Tool]
		switch {
		case !ok:
			out = append(out, Change{Tool: l.Tool, Exposed: l.Exposed, Listed: l.SHA256, Definition: l.Definition, What: []string{"new"}})
		case p.SHA256 != l.SHA256:
			out = append(out, Change{Tool: l.Tool, Exposed: l.Exposed, Pinned: p.SHA256, Listed: l.SHA256,
				Definition: l.Definition, What: changedParts(p.Definition, l.Definition)})
		}
	}
	var removed []string
	for name := range pins {
		if !seen[name] {
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	for _, name := range removed {
		p := pins[name]
		c := Change{Tool: name, Exposed: p.Exposed, Pinned: p.SHA256, What: []string{"removed"}}
		if policy != nil && policy(p.Exposed) {
			c.Policy = "tools." + p.Exposed
		}
		out = append(out, c)
	}
	return out
}

// changedParts names the parts of a definition that differ.
func changedParts(pinned, listed json.RawMessage) []string {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(pinned, &a) != nil || json.Unmarshal(listed, &b) != nil {
		return []string{"definition"}
	}
	differ := func(keys ...string) bool {
		for _, k := range keys {
			if !bytes.Equal(a[k], b[k]) {
				return true
			}
		}
		return false
	}
	var out []string
	if differ("inputSchema", "outputSchema") {
		out = append(out, "schema")
	}
	if differ("annotations") {
		out = append(out, "annotations")
	}
	if differ("description", "title") {
		out = append(out, "description")
	}
	if len(out) == 0 {
		out = append(out, "definition")
	}
	return out
}

// approvedDefinition returns the definition_sha256 of the mcp_tool_call
// detail among details, or "".
func approvedDefinition(details json.RawMessage) string {
	var ds []struct {
		Type       string `json:"type"`
		Definition string `json:"definition_sha256"`
	}
	if json.Unmarshal(details, &ds) != nil {
		return ""
	}
	for _, d := range ds {
		if d.Type == DetailType {
			return d.Definition
		}
	}
	return ""
}
