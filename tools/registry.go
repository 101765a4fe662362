// Package tools defines the guarded tools an agent sees and binds each to
// its real backend: the ledger (get_balance, list_counterparties,
// list_transfers, transfer), a deploy command (deploy) and a secrets
// directory (read_secret, list_secrets).
//
// A [Tool] is used in two steps. Prepare checks the arguments, applies
// defaults and gathers, without side effects, what the policy and the
// approver need: fact variables (counterparty, secret), RFC 9396
// authorization_details and a one-line summary. Run then executes the
// backend exactly once with the arguments Prepare returned. The caller (the
// server's guard) decides in between whether the call runs at once, waits
// for a human, or is denied; this package knows nothing of that.
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

// Tool is one guarded tool.
type Tool struct {
	// Def is what the agent sees: name, description, JSON input schema
	// (additionalProperties false) and annotations.
	Def mcp.Tool
	// Facts names the fact variables Prepare supplies to the policy.
	Facts []string
	// Prepare validates the (already schema-valid) arguments semantically,
	// applies defaults, and gathers facts and authorization details. It
	// has no side effects. Bad input is an *ArgError.
	Prepare func(ctx context.Context, args map[string]any) (*Call, error)
	// Run executes the backend once with call.Args.
	Run func(ctx context.Context, call *Call) (*Result, error)
}

// Call is a prepared tool call.
type Call struct {
	// Args are the validated arguments after defaults: exactly what is
	// approved and run.
	Args map[string]any
	// Facts are the policy's fact variables, e.g.
	// {"counterparty": {"name": "Vendor X", "known": false, "exists": false, "first_seen": ""}}.
	Facts map[string]any
	// Details is the RFC 9396 authorization_details array the approver is
	// shown and signs over.
	Details json.RawMessage
	// Summary is short human text, e.g. "Pay USD 500,000.00 from operating to Vendor X".
	Summary string
}

// Result is what a backend returns.
type Result struct {
	Content any // returned to the agent as structured JSON
	Record  any // kept in the audit log; never a secret value
}

// ArgError is bad input, naming the argument.
type ArgError struct{ Field, Msg string }

func (e *ArgError) Error() string { return e.Field + ": " + e.Msg }

func argErr(field, format string, args ...any) *ArgError {
	return &ArgError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Facts returns, per tool, the fact variables its Prepare supplies, for
// compiling the policy before any backend is opened.
func Facts() map[string][]string {
	return map[string][]string{
		"transfer":    {"counterparty"},
		"read_secret": {"secret"},
	}
}

// Registry holds the configured tools.
type Registry struct {
	tools   map[string]*Tool
	secrets *secrets.Store
}

// New builds the tools named in cfg.Tools and opens their backends: it
// creates and seeds the ledger tables in db (seeding never resets a
// balance), checks the deploy command is an executable file (a relative
// path is resolved against the working directory now), and opens the
// secrets directory. approval_status is the server's and is skipped here.
func New(ctx context.Context, cfg *config.Config, db *sql.DB) (*Registry, error) {
	r := &Registry{tools: map[string]*Tool{}}
	names := make([]string, 0, len(cfg.Tools))
	for name := range cfg.Tools {
		names = append(names, name)
	}
	sort.Strings(names)

	var (
		led *ledgerTools
		dep *deploy.Runner
	)
	for _, name := range names {
		var (
			t   *Tool
			err error
		)
		switch name {
		case "approval_status":
			continue
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
			if r.secrets == nil {
				if r.secrets, err = secrets.Open(cfg.Secrets); err != nil {
					return nil, fmt.Errorf("tools: %w", err)
				}
			}
			t = secretTool(name, r.secrets)
		default:
			err = fmt.Errorf("unknown tool (known: %v)", config.ToolNames)
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("tools: %s: %w", name, err)
		}
		r.tools[name] = t
	}
	return r, nil
}

// Tools returns the tools sorted by name.
func (r *Registry) Tools() []*Tool {
	out := make([]*Tool, 0, len(r.tools))
	for _, t := range r.tools {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *Tool) int {
		switch {
		case a.Def.Name < b.Def.Name:
			return -1
		case a.Def.Name > b.Def.Name:
			return 1
		}
		return 0
	})
	return out
}

// Lookup returns the tool called name.
func (r *Registry) Lookup(name string) (*Tool, bool) {
	t, ok := r.tools[name]
	return t, ok
}

// Close releases what the backends hold open (the secrets directory).
func (r *Registry) Close() error {
	if r.secrets != nil {
		return r.secrets.Close()
	}
	return nil
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
