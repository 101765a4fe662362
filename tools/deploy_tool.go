package tools

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/deploy"
	"github.com/mark3labs/mcp-go/mcp"
)

// versionPattern admits release names like 1.2.3, v2.0.0-rc.1+build.5 or a
// git sha; it cannot start with "-", so a version is never read as an option.
var versionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// recordedOutput bounds the output tail kept in the audit record.
const recordedOutput = 1024

func deployTool(r *deploy.Runner, cfg config.Deploy) (*Spec, error) {
	if len(cfg.Services) == 0 || len(cfg.Environments) == 0 {
		return nil, errors.New("deploy needs at least one service and one environment")
	}
	def := mcp.NewToolWithRawSchema("deploy",
		"Deploy a version of a service to an environment by running the configured deploy command. "+
			"Production deploys may need a human to approve with a security key; the call then waits.",
		schemaObject(map[string]any{
			"service": map[string]any{"type": "string", "enum": cfg.Services, "description": "Service to deploy."},
			"version": map[string]any{
				"type": "string", "minLength": 1, "maxLength": 64, "pattern": versionPattern.String(),
				"description": "Version to deploy, e.g. 1.4.2 or v2.0.0-rc.1.",
			},
			"environment": map[string]any{"type": "string", "enum": cfg.Environments, "description": "Target environment."},
		}, "service", "version", "environment"))
	def.Annotations = hints("Deploy a service", false, true, false, true)
	parse := func(args map[string]any) (deploy.Target, error) {
		var t deploy.Target
		if err := checkKeys(args, "service", "version", "environment"); err != nil {
			return t, err
		}
		var err error
		if t.Service, err = stringArg(args, "service", true); err != nil {
			return t, err
		}
		if !slices.Contains(cfg.Services, t.Service) {
			return t, argErr("service", "unknown service %q (known: %v)", t.Service, cfg.Services)
		}
		if t.Version, err = stringArg(args, "version", true); err != nil {
			return t, err
		}
		if !versionPattern.MatchString(t.Version) {
			return t, argErr("version", "must match %s", versionPattern)
		}
		if t.Environment, err = stringArg(args, "environment", true); err != nil {
			return t, err
		}
		if !slices.Contains(cfg.Environments, t.Environment) {
			return t, argErr("environment", "unknown environment %q (known: %v)", t.Environment, cfg.Environments)
		}
		return t, nil
	}
	return &Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			t, err := parse(args)
			if err != nil {
				return nil, err
			}
			return &Call{
				Args: copyArgs(args),
				Details: mustJSON([]any{map[string]any{
					"type": authzdetails.TypeDeployment, "actions": []string{"deploy"},
					"service": t.Service, "version": t.Version, "environment": t.Environment,
				}}),
				Summary: fmt.Sprintf("Deploy %s %s to %s", t.Service, t.Version, t.Environment),
			}, nil
		},
		// Run trusts call.Args as Prepare left them: the command never goes
		// through a shell, so each value reaches it as one literal argument.
		Run: func(ctx context.Context, call *Call) (*Result, error) {
			str := func(k string) string { s, _ := call.Args[k].(string); return s }
			t := deploy.Target{Service: str("service"), Version: str("version"), Environment: str("environment")}
			out, err := r.Run(ctx, t)
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256([]byte(out.Output))
			content := map[string]any{
				"service": t.Service, "version": t.Version, "environment": t.Environment,
				"exit_code": out.ExitCode, "output": out.Output, "output_truncated": out.Truncated,
				"duration_ms": out.Duration.Milliseconds(),
			}
			record := map[string]any{
				"service": t.Service, "version": t.Version, "environment": t.Environment,
				"exit_code": out.ExitCode, "duration_ms": out.Duration.Milliseconds(),
				"output_sha256": hex.EncodeToString(sum[:]), "output_tail": tailString(out.Output, recordedOutput),
			}
			return &Result{Content: content, Record: record}, nil
		},
	}, nil
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && s[0]&0xC0 == 0x80 { // skip a split character's continuation bytes
		s = s[1:]
	}
	return s
}
