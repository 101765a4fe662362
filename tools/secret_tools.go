package tools

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/tools/secrets"
	"github.com/mark3labs/mcp-go/mcp"
)

func secretTool(name string, s *secrets.Store, mac secrets.MACKey) *Spec {
	if name == "list_secrets" {
		return listSecrets(s)
	}
	return readSecret(s, mac)
}

func listSecrets(s *secrets.Store) *Spec {
	def := mcp.NewToolWithRawSchema("list_secrets",
		"List the names and classifications of the secrets that read_secret can read. Never returns values.",
		schemaObject(map[string]any{}))
	def.Annotations = hints("List secrets", true, false, true, false)
	return &Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			if err := checkKeys(args); err != nil {
				return nil, err
			}
			return &Call{Args: copyArgs(args), Summary: "List secret names"}, nil
		},
		Run: func(context.Context, *Call) (*Result, error) {
			list, err := s.List()
			if err != nil {
				return nil, err
			}
			out := []map[string]any{}
			for _, i := range list {
				out = append(out, map[string]any{"name": i.Name, "classification": i.Classification})
			}
			res := map[string]any{"secrets": out}
			return &Result{Content: res, Record: map[string]any{"count": len(out)}}, nil
		},
	}
}

func readSecret(s *secrets.Store, mac secrets.MACKey) *Spec {
	def := mcp.NewToolWithRawSchema("read_secret",
		"Read the value of a secret by name (see list_secrets). Restricted secrets may need a human to "+
			"approve with a security key; the call then waits.",
		schemaObject(map[string]any{
			"name": map[string]any{
				"type": "string", "minLength": 1, "maxLength": 128, "pattern": secrets.NamePattern.String(),
				"description": "Secret name, e.g. prod-db-password.",
			},
		}, "name"))
	def.Annotations = hints("Read a secret", true, false, true, false)
	stat := func(args map[string]any) (secrets.Info, error) {
		if err := checkKeys(args, "name"); err != nil {
			return secrets.Info{}, err
		}
		name, err := stringArg(args, "name", true)
		if err != nil {
			return secrets.Info{}, err
		}
		info, err := s.Stat(name)
		if errors.Is(err, secrets.ErrInvalidName) || errors.Is(err, secrets.ErrNotRegular) {
			return info, argErr("name", "%v", err)
		}
		return info, err
	}
	return &Spec{
		Def:   def,
		Facts: []string{"secret"},
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			info, err := stat(args)
			if err != nil {
				return nil, err
			}
			return &Call{
				Args: copyArgs(args),
				Facts: map[string]any{"secret": map[string]any{
					"name": info.Name, "classification": info.Classification, "exists": info.Exists,
				}},
				Details: mustJSON([]any{map[string]any{
					"type": authzdetails.TypeSecretAccess, "actions": []string{"read"},
					"name": info.Name, "classification": info.Classification,
				}}),
				Summary: fmt.Sprintf("Read %s secret %s", info.Classification, info.Name),
			}, nil
		},
		Run: func(_ context.Context, call *Call) (*Result, error) {
			name, _ := call.Args["name"].(string)
			sec, err := s.Read(name)
			if err != nil {
				return nil, err
			}
			content := map[string]any{"name": sec.Name, "classification": sec.Classification}
			if utf8.Valid(sec.Value) {
				content["value"] = string(sec.Value)
			} else {
				content["value_base64"] = base64.StdEncoding.EncodeToString(sec.Value)
			}
			// The record identifies the value to whoever holds the MAC key,
			// and reveals nothing to anyone else (see package secrets).
			record := map[string]any{
				"name": sec.Name, "classification": sec.Classification,
				"hmac_sha256": mac.Sum(sec.Value), "hmac_key_id": mac.ID, "size": len(sec.Value),
			}
			return &Result{Content: content, Record: record}, nil
		},
	}
}
