package ciba

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The schemas describe the types as Countersign's own tools write them: a
// CIBA client can ask for a countersignature of anything an agent's tool
// call would show the approver.
func TestToolsDetailsFitTheSchemas(t *testing.T) {
	c, err := config.Parse(countersign.DefaultConfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	c.Server.DataDir = t.TempDir()
	c.Deploy.Command[0] = filepath.Join("..", c.Deploy.Command[0])
	c.Secrets.Dir = filepath.Join("..", c.Secrets.Dir)
	ctx := context.Background()
	db, err := store.Connect(ctx, filepath.Join(c.Server.DataDir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cat, err := tools.New(ctx, c, db)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	up, err := upstream.Specs(config.Upstream{Name: "files", Prefix: "files__"},
		[]*sdk.Tool{{Name: "write_file", InputSchema: map[string]any{"type": "object"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[*tools.Spec]map[string]any{
		lookup(t, cat, "transfer"):    {"from": "operating", "to": "Vendor X", "amount": 500000.0, "currency": "USD", "memo": "Invoice 7"},
		lookup(t, cat, "deploy"):      {"service": "api", "version": "1.4.2", "environment": "production"},
		lookup(t, cat, "read_secret"): {"name": "prod-db-password"},
		up[0]:                         {"path": "/srv/a.txt", "mode": 420.0},
	}
	for spec, args := range calls {
		call, err := spec.Prepare(ctx, args)
		if err != nil {
			t.Fatalf("%s: %v", spec.Def.Name, err)
		}
		if _, _, err := parseDetails(string(call.Details)); err != nil {
			t.Errorf("%s details %s: %v", spec.Def.Name, call.Details, err)
		}
	}
}

func lookup(t *testing.T, cat *tools.Catalog, name string) *tools.Spec {
	t.Helper()
	s, ok := cat.Lookup(name)
	if !ok {
		t.Fatalf("no tool %s", name)
	}
	return s
}
