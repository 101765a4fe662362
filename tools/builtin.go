package tools

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/deploy"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/tools/secrets"
	"github.com/mark3labs/mcp-go/mcp"
)

// Builtin is the Source of the built-in backends' specs.
const Builtin = "builtin"

// Facts returns, per built-in tool, the fact variables its Prepare
// supplies, for compiling the policy before any backend is opened.
func Facts() map[string][]string {
	return map[string][]string{
		"transfer":    {"counterparty"},
		"read_secret": {"secret"},
	}
}

// New returns a catalog holding the built-in tools named in cfg.Tools, and
// opens their backends: it creates and seeds the ledger tables in db
// (seeding never resets a balance), checks the deploy command is an
// executable file (a relative path is resolved against the working
// directory now), and opens the secrets directory. Names that are not
// built-in tools (approval_status, upstream tools) are left to their own
// sources.
func New(ctx context.Context, cfg *config.Config, db *sql.DB) (*Catalog, error) {
	c := NewCatalog()
	specs, err := builtins(ctx, cfg, db, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Replace(Builtin, specs); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func builtins(ctx context.Context, cfg *config.Config, db *sql.DB, c *Catalog) ([]*Spec, error) {
	names := make([]string, 0, len(cfg.Tools))
	for name := range cfg.Tools {
		// approval_status is the guard's; ciba is the policy of CIBA
		// requests, never an MCP tool.
		if slices.Contains(config.BuiltinTools, name) && name != "approval_status" && name != "ciba" {
			names = append(names, name)
		}
	}
	sort.Strings(names)

	var (
		specs []*Spec
		led   *ledgerTools
		dep   *deploy.Runner
		sec   *secrets.Store
		mac   secrets.MACKey
	)
	for _, name := range names {
		var (
			t   *Spec
			err error
		)
		switch name {
		case "get_balance", "list_counterparties", "list_transfers", "transfer":
			if led == nil {
				if db == nil {
					return nil, fmt.Errorf("tools: %s needs the database", name)
				}
				l, err := ledger.Open(ctx, db, cfg.Ledger)
				if err != nil {
					return nil, fmt.Errorf("tools: %w", err)
				}
				led = newLedgerTools(l, cfg.Ledger)
			}
			t, err = led.tool(name)
		case "deploy":
			if dep == nil {
				dep, err = deploy.New(deploy.Options{
					Command: cfg.Deploy.Command, Timeout: cfg.Deploy.Timeout,
					MaxOutputBytes: cfg.Deploy.MaxOutputBytes, DataDir: cfg.Server.DataDir,
				})
				if err != nil {
					return nil, fmt.Errorf("tools: %w", err)
				}
			}
			t, err = deployTool(dep, cfg.Deploy)
		case "read_secret", "list_secrets":
			if sec == nil {
				if mac, err = secrets.LoadOrCreateMACKey(cfg.Server.DataDir); err != nil {
					return nil, fmt.Errorf("tools: %w", err)
				}
				if sec, err = secrets.Open(cfg.Secrets); err != nil {
					return nil, fmt.Errorf("tools: %w", err)
				}
				c.closeWith(sec.Close)
			}
			t = secretTool(name, sec, mac)
		}
		if err != nil {
			return nil, fmt.Errorf("tools: %s: %w", name, err)
		}
		t.Pure = t.ReadOnly() // our own annotations are honest
		specs = append(specs, t)
	}
	return specs, nil
}

// checkKeys refuses arguments the schema does not declare, so Prepare is
// safe even when called without the schema check.
func checkKeys(args map[string]any, allowed ...string) error {
	for k := range args {
		if !slices.Contains(allowed, k) {
			return argErr(k, "unknown argument (expected one of %v)", allowed)
		}
	}
	return nil
}

// stringArg returns args[field] as a string; absent is "" unless required.
func stringArg(args map[string]any, field string, required bool) (string, error) {
	v, ok := args[field]
	if !ok || v == nil {
		if required {
			return "", argErr(field, "is required")
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", argErr(field, "must be a string, got %s", jsonType(v))
	}
	if required && s == "" {
		return "", argErr(field, "must not be empty")
	}
	return s, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case float64, json.Number, int, int64:
		return "a number"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func copyArgs(args map[string]any) map[string]any {
	out := make(map[string]any, len(args))
	for k, v := range args {
		out[k] = v
	}
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on maps of strings, numbers and bools
	}
	return b
}

// schemaObject builds a JSON Schema for an arguments object that allows no
// other properties.
func schemaObject(properties map[string]any, required ...string) json.RawMessage {
	s := map[string]any{
		"type":                 "object",
		"properties":           properties,
		"additionalProperties": false,
	}
	if len(required) > 0 {
		s["required"] = required
	}
	return mustJSON(s)
}

// hints sets the four MCP annotation hints explicitly.
func hints(title string, readOnly, destructive, idempotent, openWorld bool) mcp.ToolAnnotation {
	return mcp.ToolAnnotation{
		Title:           title,
		ReadOnlyHint:    mcp.ToBoolPtr(readOnly),
		DestructiveHint: mcp.ToBoolPtr(destructive),
		IdempotentHint:  mcp.ToBoolPtr(idempotent),
		OpenWorldHint:   mcp.ToBoolPtr(openWorld),
	}
}

var errNoTool = errors.New("no such tool")
