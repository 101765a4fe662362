package upstream_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/mark3labs/mcp-go/client"
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
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := client.NewStdioMCPClient(server, nil, root)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		init := mcp.InitializeRequest{}
		init.Params.ClientInfo = mcp.Implementation{Name: "countersign-test", Version: "0"}
		if _, err := c.Initialize(ctx, init); err != nil {
			t.Fatal(err)
		}
		list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
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
