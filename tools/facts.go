package tools

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/tools/secrets"
)

// ReadFacts returns the fact variables a built-in tool's Prepare gives the
// policy for args, from the backends as they are, changing none of them:
// the ledger is read from db as serve left it (nil: the database does not
// exist yet, and a tool that needs it has no facts), the secrets directory
// is only looked at, and no key is made. It is for dry runs (policy test),
// which must write nothing. A tool with no facts returns nil.
func ReadFacts(ctx context.Context, cfg *config.Config, db *store.DB, tool string, args map[string]any) (map[string]any, error) {
	var spec *Spec
	switch tool {
	case "transfer":
		if db == nil {
			return nil, fmt.Errorf("%s: the ledger's database does not exist yet (serve creates it)", tool)
		}
		spec, _ = newLedgerTools(ledger.Existing(db), cfg.Ledger).tool(tool)
	case "read_secret":
		sec, err := secrets.Open(cfg.Secrets)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tool, err)
		}
		defer sec.Close()
		spec = secretTool(tool, sec, secrets.MACKey{}) // Prepare reads no value, so it needs no key
	default:
		return nil, nil
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	return call.Facts, nil
}
