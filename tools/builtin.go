package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/deploy"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/tools/secrets"
	"github.com/mark3labs/mcp-go/mcp"
)

// Builtin is the Source of the built-in backends' specs.
const Builtin = "builtin"

// factSchemas are the JSON Schemas of the fact variables each built-in
// tool's Prepare supplies; Prepare and these must agree.
var factSchemas = map[string]map[string]json.RawMessage{
	"transfer": {"counterparty": schemaObject(map[string]any{
		"name":       map[string]any{"type": "string", "description": "The payee's name as the ledger knows it."},
		"known":      map[string]any{"type": "boolean", "description": "Whether the payee is verified."},
		"exists":     map[string]any{"type": "boolean", "description": "Whether the ledger has seen the payee before."},
		"first_seen": map[string]any{"type": "string", "description": "RFC 3339 time the payee was first seen; empty if new."},
	})},
	"read_secret": {"secret": schemaObject(map[string]any{
		"name":           map[string]any{"type": "string"},
		"classification": map[string]any{"type": "string", "enum": config.Classifications()},
		"exists":         map[string]any{"type": "boolean"},
	})},
}

// Facts returns, per built-in tool, the fact variables its Prepare
// supplies, for compiling the policy before any backend is opened.
func Facts() map[string][]string {
	out := map[string][]string{}
	for tool, facts := range factSchemas {
		for f := range facts {
			out[tool] = append(out[tool], f)
		}
		sort.Strings(out[tool])
	}
	return out
}

// Schema is what a built-in tool's policy rules can see: the JSON Schema of
// its arguments and of each of its fact variables.
type Schema struct {
	Args  json.RawMessage
	Facts map[string]json.RawMessage
}

// Schemas returns the Schema of each built-in tool cfg names, built from
// the configuration alone (no backend is opened), so that policies can be
// checked against them before anything starts. A tool whose settings are
// incomplete (transfer without accounts) is left out: the configuration
// check reports that.
func Schemas(cfg *config.Config) map[string]Schema {
	out := map[string]Schema{}
	lt := newLedgerTools(nil, cfg.Ledger)
	for name := range cfg.Tools {
		var spec *Spec
		switch name {
		case "get_balance", "list_counterparties", "list_transfers", "transfer":
			spec, _ = lt.tool(name)
		case "deploy":
			spec, _ = deployTool(nil, cfg.Deploy)
		case "read_secret", "list_secrets":
			spec = secretTool(name, nil, secrets.MACKey{})
		}
		if spec != nil {
			out[name] = Schema{Args: spec.Def.RawInputSchema, Facts: factSchemas[name]}
		}
	}
	return out
}

// New returns a catalog holding the built-in tools named in cfg.Tools, and
// opens their backends: it creates and seeds the ledger tables in db
// (seeding never resets a balance), checks the deploy command is an
// executable file (a relative path is resolved against the working
// directory now), and opens the secrets directory. Names that are not
// built-in tools (approval_status, upstream tools) are left to their own
// sources.
func New(ctx context.Context, cfg *config.Config, db *store.DB) (*Catalog, error) {
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

func builtins(ctx context.Context, cfg *config.Config, db *store.DB, c *Catalog) ([]*Spec, error) {
	names := make([]string, 0, len(cfg.Tools))
	for name := range cfg.Tools {
		// approval_status is the guard's; ciba is the policy of CIBA
		// requests, never an MCP tool.
		if slices.Contains(config.BuiltinTools(), name) && name != "approval_status" && name != "ciba" {
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

// CheckConfig finds what would stop [New] for cfg that the configuration's
// own checks cannot see, because only the backends know it: a currency the
// ledger has no minor units for, a balance with more decimals than its
// currency has, a payee name the ledger would not store. Each problem names
// its key path, so that config validate reports it with the rest.
func CheckConfig(cfg *config.Config) []error {
	ledgerUsed := false
	for _, name := range []string{"get_balance", "list_counterparties", "list_transfers", "transfer"} {
		_, ok := cfg.Tools[name]
		ledgerUsed = ledgerUsed || ok
	}
	if !ledgerUsed {
		return nil
	}
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &config.Error{Source: cfg.Source, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	for i, a := range cfg.Ledger.Accounts {
		p := fmt.Sprintf("ledger.accounts[%d]", i)
		if _, err := ledger.MinorUnits(a.Currency); err != nil {
			fail(p+".currency", "%v", err)
			continue
		}
		if _, err := ledger.ParseBalance(a.Balance, a.Currency); err != nil {
			fail(p+".balance", "%q: %v", a.Balance, err)
		}
	}
	for i, c := range cfg.Ledger.Counterparties {
		if _, err := ledger.NormalizeName(c.Name); err != nil {
			fail(fmt.Sprintf("ledger.counterparties[%d].name", i), "%v", err)
		}
	}
	return errs
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
