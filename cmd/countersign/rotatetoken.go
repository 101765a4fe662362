package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
)

// rotateTarget is, from rotate-key's flags, naming a key in a PKCS #11 token to
// hand the log to (--to-token, --to-key); the PIN comes from the
// environment, never a flag (a flag is in ps and the shell's history).
type rotateTarget struct {
	config.AuditPKCS11
	generate bool
}

func (to *rotateTarget) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&to.Module, "to-module", "", "the token's PKCS #11 library (default: audit.pkcs11.module)")
	f.StringVar(&to.Token, "to-token", "", "rotate to a key in the PKCS #11 token with this label")
	f.StringVar(&to.Key, "to-key", "", "the label of the token's Ed25519 key pair to rotate to")
	f.StringVar(&to.PINEnv, "to-pin-env", config.DefaultPINEnv, "the environment variable holding the token's user PIN")
	f.BoolVar(&to.generate, "generate", false, "make the key pair in the token (refused if one by that label exists)")
	cmd.MarkFlagsRequiredTogether("to-token", "to-key")
}

// rotateToToken hands the log to the token key to names
// (daemon.RotateKeyToToken) and says what the configuration must now say.
func rotateToToken(cmd *cobra.Command, c *config.Config, target rotateTarget, reason string) (string, string, error) {
	to := target.AuditPKCS11
	if to.Module == "" {
		to.Module = c.Audit.PKCS11.Module
	}
	if to.Module == "" {
		return "", "", fmt.Errorf("--to-module names the token's PKCS #11 library (audit.pkcs11.module is not set)")
	}
	previous, next, err := daemon.RotateKeyToToken(cmd.Context(), c, to, target.generate, reason, audit.Options{Logger: warnings(cmd)})
	if err != nil {
		return "", "", err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "the log is now signed by key %q of token %q; before starting the server, set in the configuration\n"+
		"  audit:\n    pkcs11: {module: %s, token: %q, key: %q, pin_env: %s}\nand remove audit.key_file if it is set\n",
		to.Key, to.Token, to.Module, to.Token, to.Key, to.PINEnv)
	return previous, next, nil
}
